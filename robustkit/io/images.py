"""Image folders: recursive scanning, labels, and decoding to the model's input in batches.

Each file is decoded by :mod:`robustkit.io.decode`. Unreadable files are skipped with a reason
(or raise in strict mode); images are read one batch at a time so memory stays bounded by the
batch size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustkit.errors import ImageReadError, InputError
from robustkit.io.decode import (  # noqa: F401  (the note names are part of this module's API)
    NOTE_16_BIT,
    NOTE_ALPHA,
    NOTE_FIRST_FRAME,
    NOTE_TO_GRAY,
    NOTE_TO_RGB,
    RESIZE_METHODS,
    image_size,
    read_image,
)
from robustkit.io.labels import (
    folder_class_names,
    inside_root,
    read_class_names,
    read_labels_csv,
)
from robustkit.io.pixels import from_uint8

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
LABEL_SOURCES = ("labels file", "class folders", "none")


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


def _outside_reason(path: Path, root: Path) -> str | None:
    """Why the file ``path`` found under ``root`` is not read, or None when it may be.

    Only regular files under the root itself are read: a symbolic link whose target lies
    outside the root, and anything that is not a regular file (a FIFO would block the read),
    are skipped.
    """
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            return "symbolic link to a file outside the image folder; not read"
    if not path.is_file():
        return "not a regular file"
    return None


def scan_image_files(
    source: str | os.PathLike[str], exclude: Sequence[str | os.PathLike[str]] = ()
) -> tuple[Path, list[str], list[SkippedFile]]:
    """Find image files under a folder (recursively, sorted) or accept a single file.

    Hidden files and folders (leading dot) and the paths in ``exclude`` are ignored silently.
    Nothing outside the folder is read: symbolic links to folders are not followed and links
    to files outside it are skipped, each with its reason. A single file given is read as it is.

    Returns:
        (root, relative POSIX paths of image files, files skipped with the reason).
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
    root = source.resolve()
    excluded = {Path(p).resolve() for p in exclude}
    images: list[str] = []
    others: list[SkippedFile] = []
    for folder, subfolders, files in os.walk(source):
        visible = sorted(name for name in subfolders if not name.startswith("."))
        links = [name for name in visible if (Path(folder) / name).is_symlink()]
        for name in links:
            relative = (Path(folder) / name).relative_to(source).as_posix()
            others.append(SkippedFile(relative, "symbolic link to a folder; not followed"))
        subfolders[:] = [name for name in visible if name not in links]
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.resolve() in excluded:
                continue
            relative = path.relative_to(source).as_posix()
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                reason = f"not an image file ({path.suffix or 'no'} extension)"
            else:
                reason = _outside_reason(path, root)
            if reason is None:
                images.append(relative)
            else:
                others.append(SkippedFile(relative, reason))
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
            label_of = self._inside_root(read_labels_csv(labels, self.class_names), labels)
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

    def _inside_root(
        self, label_of: dict[str, int], labels: str | os.PathLike[str]
    ) -> dict[str, int]:
        """``label_of`` keyed relative to the root; rows naming a place outside the root become
        skip rows (strict mode: InputError), as nothing outside the image folder is read."""
        inside: dict[str, int] = {}
        for key, label in label_of.items():
            relative = inside_root(key, self.root)
            if relative is None:
                reason = f"named in {Path(labels).name} but outside the image folder; not read"
                if self.strict:
                    raise InputError(f"{key}: {reason} (strict mode).")
                self.skipped.append(SkippedFile(key, reason))
            elif inside.setdefault(relative, label) != label:
                raise InputError(f"{labels}: {relative} has two different labels.")
        return inside

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
