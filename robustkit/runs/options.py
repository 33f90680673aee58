"""Option groups every folder run shares, and the loading they drive.

``ModelOptions`` say how a model file becomes a :class:`~robustkit.models.Classifier`,
``ImageOptions`` how an image folder is labelled and read, ``OutputOptions`` where results go.
The CLI builds the same three groups from its command-line options.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustkit.errors import InputError
from robustkit.io import ImageFolder
from robustkit.models import Classifier, Preprocessing, load_keras_model

logger = logging.getLogger(__name__)

ModelSource = Any  # a .keras/.h5 path, a Classifier or a Keras model

# Images per batch by default: a PGD attack on 224x224x3 images through ResNet50 peaked at
# 2.4 GiB RSS at 32 (4.0 GiB at 64, measured on CPU), so the default fits a 4 GiB machine.
DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class ModelOptions:
    """How a model file (or a bare Keras model) becomes a Classifier on [0, 1] pixels.

    Attributes:
        unsafe_load: turn Keras ``safe_mode`` off (Lambda layers, custom code); trusted files only.
        input_scale: the model expects pixels times this (255 for 0..255 inputs); in-graph.
        mean: per-channel mean subtracted after scaling, or None.
        std: per-channel std divided by after the mean, or None.
        input_size: (height, width) in pixels to run a model whose input size is undefined
            (``(None, None, C)``) at; images of other sizes then need a resize method.
    """

    unsafe_load: bool = False
    input_scale: float = 1.0
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    input_size: tuple[int, int] | None = None

    def preprocessing(self) -> Preprocessing:
        """The in-graph preprocessing these options describe."""
        return Preprocessing(scale=self.input_scale, mean=self.mean, std=self.std)


@dataclass(frozen=True)
class ImageOptions:
    """How an image folder is labelled and read.

    Attributes:
        labels: CSV of ``relative path,label`` rows (label: class index or name), or None.
        class_names: text file with one class name per line, in model order, or None.
        folder_labels: use class subfolders as labels (sorted names -> indices, as Keras does).
        resize: resize method for images of another size (see ``robustkit.io.RESIZE_METHODS``);
            None refuses them.
        strict: fail on the first unreadable file instead of skipping it.
        batch_size: images per batch (memory is bounded by it; see DEFAULT_BATCH_SIZE).
    """

    labels: str | os.PathLike[str] | None = None
    class_names: str | os.PathLike[str] | None = None
    folder_labels: bool = True
    resize: str | None = None
    strict: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The options that decide which images are read and how, with resolved paths."""
        resolved = lambda p: None if p is None else str(Path(p).resolve())  # noqa: E731
        return {
            "labels": resolved(self.labels),
            "class_names": resolved(self.class_names),
            "folder_labels": self.folder_labels,
            "resize": self.resize,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class OutputOptions:
    """Where a run writes and whether it may replace results already there.

    Attributes:
        out: the output folder (created when missing).
        overwrite: replace earlier results in ``out`` (input images are never replaced).
    """

    out: Path
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))

    @classmethod
    def of(cls, out: str | os.PathLike[str] | OutputOptions) -> OutputOptions:
        """``out`` itself when it is OutputOptions, else OutputOptions(out)."""
        return out if isinstance(out, OutputOptions) else cls(Path(out))


def load_model(model: ModelSource, options: ModelOptions | None = None) -> Classifier:
    """``model`` as a Classifier: a ``.keras``/``.h5`` path is loaded (safe mode unless
    ``options.unsafe_load``), a Keras model is wrapped, a Classifier is used as it is (it carries
    its own preprocessing, so ``options`` must then be the defaults)."""
    options = options or ModelOptions()
    if isinstance(model, Classifier):
        if options != ModelOptions():
            raise InputError(
                "A Classifier carries its own preprocessing and loading; give ModelOptions only "
                "with a model file or a Keras model."
            )
        return model
    if isinstance(model, (str, os.PathLike)):
        if options.unsafe_load:
            logger.warning(
                "unsafe loading is on: the model file may run code. Only use trusted files."
            )
        model = load_keras_model(model, safe_mode=not options.unsafe_load)
    input_shape = None
    if options.input_size is not None:
        channels = getattr(model, "input_shape", (None,))[-1]
        input_shape = (*options.input_size, channels)
    return Classifier(model, preprocessing=options.preprocessing(), input_shape=input_shape)


def describe_model(model: ModelSource, classifier: Classifier) -> str:
    """The model as a report names it: its file as given, else the Keras model's name."""
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return str(getattr(classifier.model, "name", type(classifier.model).__name__))


def open_images(
    images: str | os.PathLike[str], classifier: Classifier, options: ImageOptions
) -> ImageFolder:
    """The image folder (or file) read for ``classifier``, headers checked, sizes matched."""
    folder = ImageFolder(
        images,
        image_shape=classifier.input_shape,
        resize=options.resize,
        labels=options.labels,
        class_names=options.class_names,
        folder_labels=options.folder_labels,
        num_classes=classifier.num_classes,
        strict=options.strict,
    )
    folder.check_sizes()
    return folder
