"""Image folders: recursive scanning, labels, and decoding to the model's input in batches.

Files are decoded with Pillow into uint8 codes [H, W, C] on the 8-bit grid (see
:mod:`robustkit.io.pixels`), converted to the model's channel count (1 = grayscale, 3 = RGB) and,
only when asked, resized. Unreadable files are skipped with a reason (or raise in strict mode);
images are read one batch at a time so memory stays bounded by the batch size.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from robustkit.errors import ImageReadError, InputError
from robustkit.io.labels import (
    folder_class_names,
    read_class_names,
    read_labels_csv,
)
from robustkit.io.pixels import from_uint8

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
LABEL_SOURCES = ("labels file", "class folders", "none")

# Notes attached to images whose conversion changed them; callers count identical notes.
NOTE_ALPHA = "alpha channel dropped"
NOTE_TO_GRAY = "colour converted to grayscale"
NOTE_TO_RGB = "grayscale replicated to RGB"
NOTE_16_BIT = "16-bit pixels reduced to 8 bits"
NOTE_FIRST_FRAME = "first frame of an animation used"
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not attacked: its path relative to the image root and why."""

    relative: str
    reason: str


@dataclass(frozen=True)
class ImageEntry:
    """One image file: path relative to the root (POSIX), absolute path, class index or None."""

    relative: str
    path: Path
    label: int | None = None


@dataclass
class ImageBatch:
    """Images decoded from consecutive entries; files that failed are in ``skipped``.

    Attributes:
        entries: the entries read successfully, in order.
        codes: uint8 [n, H, W, C], the 8-bit pixels as decoded (after conversion).
        skipped: entries of this batch that could not be read, with the reason.
        notes: (relative path, note) for each conversion that changed an image.
    """

    entries: list[ImageEntry]
    codes: np.ndarray
    skipped: list[SkippedFile] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def pixels(self, bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
        """Float32 pixels [n, H, W, C] in ``bounds``, exactly on the 8-bit grid."""
        return from_uint8(self.codes, bounds)

    @property
    def labels(self) -> np.ndarray | None:
        """int64 class indices [n], or None when the images carry no labels."""
        if not self.entries or self.entries[0].label is None:
            return None
        return np.array([entry.label for entry in self.entries], dtype=np.int64)


def _read_error(path: Path, error: BaseException) -> ImageReadError:
    if isinstance(error, UnidentifiedImageError):
        return ImageReadError(f"{path}: not a readable image (Pillow cannot identify it).")
    if isinstance(error, Image.DecompressionBombError):
        return ImageReadError(f"{path}: too many pixels to decode safely ({error}).")
    message = str(error) or type(error).__name__
    return ImageReadError(f"{path}: cannot decode the image ({message}).")


def _to_8_bit(image: Image.Image, path: Path, notes: list[str]) -> Image.Image:
    """The image as 8-bit L or RGB (alpha dropped, palettes expanded, 16-bit reduced)."""
    mode = image.mode
    if mode == "P":
        has_alpha = "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
        mode = image.mode
    if mode in _ALPHA_MODES:
        notes.append(NOTE_ALPHA)
        return image.convert("L" if mode in ("LA", "La") else "RGB")
    if mode.startswith("I"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"{path}: 32-bit integer pixels are not supported.")
        notes.append(NOTE_16_BIT)
        codes = np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)
        return Image.fromarray(codes, mode="L")
    if mode == "F":
        raise ImageReadError(f"{path}: floating-point pixels are not supported; save as 8-bit.")
    if mode in ("1", "L", "RGB"):
        return image.convert("L") if mode == "1" else image
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV


def read_image(
    path: str | os.PathLike[str],
    *,
    channels: int,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Decode one image file to uint8 codes [H, W, channels] on the 8-bit grid.

    Args:
        channels: 1 (grayscale, ITU-R 601-2 luma) or 3 (RGB; grayscale is replicated).
        size: (height, width) the result must have; None keeps the file's size.
        resize: a :data:`RESIZE_METHODS` name; without it a size mismatch raises InputError.

    Returns:
        The codes and the notes on conversions that changed the image.

    Raises:
        ImageReadError: corrupt, truncated or non-image file.
        InputError: wrong size and no resize method.
    """
    if channels not in (1, 3):
        raise InputError(f"Images can be read for 1 or 3 channels, not {channels}.")
    if resize is not None and resize not in RESIZE_METHODS:
        raise InputError(f"Unknown resize method {resize!r}; choose one of {list(RESIZE_METHODS)}.")
    path = Path(path)
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                if getattr(opened, "n_frames", 1) > 1:
                    notes.append(NOTE_FIRST_FRAME)
                    opened.seek(0)
                opened.load()
                image = _to_8_bit(opened, path, notes)
    except ImageReadError:
        raise
    except (*_READ_ERRORS, Image.DecompressionBombWarning) as error:
        raise _read_error(path, error) from error
    wanted_mode = "L" if channels == 1 else "RGB"
    if image.mode != wanted_mode:
        notes.append(NOTE_TO_GRAY if channels == 1 else NOTE_TO_RGB)
        image = image.convert(wanted_mode)
    if size is not None and (image.height, image.width) != tuple(size):
        height, width = size
        if resize is None:
            raise InputError(
                f"{path} is {image.width}x{image.height} pixels but the model takes "
                f"{width}x{height}. Resize the images beforehand, or choose a resize method "
                f"(CLI: --resize bilinear; one of {', '.join(RESIZE_METHODS)})."
            )
        image = image.resize((width, height), RESIZE_METHODS[resize])
        notes.append(f"resized to {width}x{height} ({resize})")
    codes = np.asarray(image, dtype=np.uint8)
    return codes.reshape(image.height, image.width, channels), notes


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) read from the file header only; ImageReadError when unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            return opened.height, opened.width
    except _READ_ERRORS as error:
        raise _read_error(path, error) from error


def scan_image_files(
    source: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = ()
) -> tuple[Path, list[str], list[SkippedFile]]:
    """Find image files under a folder (recursively, sorted) or accept a single file.

    Hidden files and folders (leading dot) and the paths in ``exclude`` are ignored silently.

    Returns:
        (root, relative POSIX paths of image files, files skipped for not being images).
    """
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() not in IMAGE_EXTENSIONS:
            raise InputError(
                f"{source} is not an image file; supported: {', '.join(IMAGE_EXTENSIONS)}."
            )
        return source.parent, [source.name], []
    if not source.is_dir():
        raise InputError(f"Image path not found: {source}. Give a folder or an image file.")
    excluded = {Path(p).resolve() for p in exclude}
    images: list[str] = []
    others: list[SkippedFile] = []
    for folder, subfolders, files in os.walk(source):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.resolve() in excluded:
                continue
            relative = path.relative_to(source).as_posix()
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(relative)
            else:
                others.append(
                    SkippedFile(relative, f"not an image file ({path.suffix or 'no'} extension)")
                )
    return source, sorted(images), sorted(others, key=lambda skip: skip.relative)


class ImageFolder:
    """The images under a folder (or one file), labelled and read in batches for one model.

    Labels come from, in order: a labels CSV (relative path -> class index or name); class
    subfolders (sorted names -> indices as Keras' ``image_dataset_from_directory``, or looked up
    in ``class_names``); else none (callers use the model's own predictions).

    Args:
        source: a folder, searched recursively, or a single image file.
        image_shape: (height, width, channels) of the model input.
        resize: resize method for images of another size; None refuses mismatched sizes.
        labels: path of a labels CSV.
        class_names: path of a names.txt, one class name per line in model order.
        folder_labels: use class subfolders as labels when present.
        num_classes: the model's class count; labels are checked against it.
        strict: raise on the first file that cannot be used instead of skipping it.
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        image_shape: Sequence[int],
        resize: str | None = None,
        labels: str | os.PathLike[str] | None = None,
        class_names: str | os.PathLike[str] | None = None,
        folder_labels: bool = True,
        num_classes: int | None = None,
        strict: bool = False,
    ) -> None:
        if len(image_shape) != 3:
            raise InputError(f"image_shape must be (height, width, channels), got {image_shape}.")
        if resize is not None and resize not in RESIZE_METHODS:
            raise InputError(
                f"Unknown resize method {resize!r}; choose one of {list(RESIZE_METHODS)}."
            )
        self.height, self.width, self.channels = (int(d) for d in image_shape)
        self.resize = resize
        self.strict = strict
        self.num_classes = num_classes
        excluded = [p for p in (labels, class_names) if p is not None]
        self.root, relatives, self.skipped = scan_image_files(source, exclude=excluded)
        if self.strict and self.skipped:
            first = self.skipped[0]
            raise ImageReadError(f"{self.root / first.relative}: {first.reason} (strict mode).")
        if not relatives:
            raise InputError(
                f"No images to read in {source}: searched recursively for "
                f"{', '.join(IMAGE_EXTENSIONS)} files"
                + (f"; {len(self.skipped)} other files were skipped." if self.skipped else ".")
            )
        self.class_names = None if class_names is None else read_class_names(class_names)
        label_of, self.label_source = self._resolve_labels(relatives, labels, folder_labels)
        self.entries: list[ImageEntry] = []
        for relative in relatives:
            if self.label_source != "none" and relative not in label_of:
                reason = f"no label in {Path(labels).name}"
                if self.strict:
                    raise InputError(f"{self.root / relative}: {reason} (strict mode).")
                self.skipped.append(SkippedFile(relative, reason))
                continue
            self.entries.append(ImageEntry(relative, self.root / relative, label_of.get(relative)))
        self.skipped.sort(key=lambda skip: skip.relative)
        if not self.entries:
            raise InputError(f"None of the images in {source} has a label in {labels}.")

    def _resolve_labels(
        self,
        relatives: list[str],
        labels: str | os.PathLike[str] | None,
        folder_labels: bool,
    ) -> tuple[dict[str, int], str]:
        """{relative path: class index} and the label source's name."""
        if labels is not None:
            label_of = read_labels_csv(labels, self.class_names)
            unused = len(set(label_of) - set(relatives))
            if unused:
                logger.info("%d rows of %s name no image that was found", unused, labels)
            self._check_range(label_of.values(), str(labels))
            return label_of, "labels file"
        if not (folder_labels and all("/" in relative for relative in relatives)):
            return {}, "none"
        folders = folder_class_names(self.root)
        names = self.class_names if self.class_names is not None else folders
        unknown = sorted(set(folders) - set(names))
        if unknown:
            raise InputError(
                f"Class folders {', '.join(unknown)} in {self.root} are not among the class "
                "names given; fix the names file or the folder names."
            )
        if (
            self.class_names is None
            and self.num_classes is not None
            and (len(folders) != self.num_classes)
        ):
            raise InputError(
                f"{self.root} has {len(folders)} class subfolders but the model has "
                f"{self.num_classes} classes, so sorted folder names cannot be mapped to class "
                "indices. List all class names in model order (CLI: --class-names names.txt), "
                "or use the model's own predictions as labels (CLI: --no-folder-labels)."
            )
        label_of = {relative: names.index(relative.split("/", 1)[0]) for relative in relatives}
        self._check_range(label_of.values(), "class names")
        return label_of, "class folders"

    def _check_range(self, labels: object, source: str) -> None:
        values = list(labels)  # type: ignore[call-overload]
        if (
            self.num_classes is not None
            and values
            and (min(values) < 0 or max(values) >= self.num_classes)
        ):
            raise InputError(
                f"{source} holds class indices in [{min(values)}, {max(values)}] but the model "
                f"has {self.num_classes} classes (0..{self.num_classes - 1})."
            )

    def __len__(self) -> int:
        return len(self.entries)

    def check_sizes(self) -> None:
        """Read every header once; refuse mismatched sizes early when no resize method is set.

        Files whose header is unreadable are moved to ``skipped`` (strict mode: raised).
        """
        readable = []
        mismatched = []
        for entry in self.entries:
            try:
                size = image_size(entry.path)
            except ImageReadError as error:
                if self.strict:
                    raise
                self.skipped.append(SkippedFile(entry.relative, _reason(error, entry.path)))
                continue
            readable.append(entry)
            if size != (self.height, self.width):
                mismatched.append((entry, size))
        self.entries = readable
        self.skipped.sort(key=lambda skip: skip.relative)
        if mismatched and self.resize is None:
            entry, (height, width) = mismatched[0]
            raise InputError(
                f"{len(mismatched)} images do not match the model's {self.width}x{self.height} "
                f"input (e.g. {entry.relative} is {width}x{height}). Choose a resize method "
                f"(CLI: --resize bilinear; one of {', '.join(RESIZE_METHODS)}) or resize them "
                "beforehand."
            )
        if not self.entries:
            raise InputError(f"None of the images under {self.root} could be read.")

    def read_batch(self, entries: Sequence[ImageEntry]) -> ImageBatch:
        """Decode ``entries``; unreadable files go to the batch's ``skipped`` (strict: raise)."""
        good: list[ImageEntry] = []
        codes: list[np.ndarray] = []
        skipped: list[SkippedFile] = []
        notes: list[tuple[str, str]] = []
        for entry in entries:
            try:
                image, image_notes = read_image(
                    entry.path,
                    channels=self.channels,
                    size=(self.height, self.width),
                    resize=self.resize,
                )
            except ImageReadError as error:
                if self.strict:
                    raise
                skipped.append(SkippedFile(entry.relative, _reason(error, entry.path)))
                continue
            good.append(entry)
            codes.append(image)
            notes.extend((entry.relative, note) for note in image_notes)
        shape = (len(codes), self.height, self.width, self.channels)
        stacked = np.stack(codes) if codes else np.zeros(shape, np.uint8)
        return ImageBatch(good, stacked, skipped, notes)

    def batches(self, batch_size: int) -> Iterator[ImageBatch]:
        """Consecutive batches of up to ``batch_size`` entries, decoded lazily."""
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size!r}.")
        for begin in range(0, len(self.entries), batch_size):
            yield self.read_batch(self.entries[begin : begin + batch_size])


def _reason(error: ImageReadError, path: Path) -> str:
    """The error message without the leading path (the report row carries the path)."""
    message = str(error)
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
