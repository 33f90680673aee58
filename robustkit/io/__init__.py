"""Reading image folders, label files and MNIST; writing exact 8-bit PNGs and reports."""

from robustkit.io.decode import RESIZE_METHODS, image_size, read_image
from robustkit.io.files import atomic_write, remove_temp_files
from robustkit.io.images import (
    IMAGE_EXTENSIONS,
    ImageBatch,
    ImageEntry,
    ImageFolder,
    SkippedFile,
    scan_image_files,
)
from robustkit.io.labels import read_class_names, read_labels_csv
from robustkit.io.mnist import load_mnist
from robustkit.io.pixels import from_uint8, to_uint8
from robustkit.io.png import perturbation_codes, save_image, write_png
from robustkit.io.reports import RunJournal, to_jsonable, write_csv, write_json

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESIZE_METHODS",
    "ImageBatch",
    "ImageEntry",
    "ImageFolder",
    "RunJournal",
    "SkippedFile",
    "atomic_write",
    "from_uint8",
    "image_size",
    "load_mnist",
    "perturbation_codes",
    "read_class_names",
    "read_image",
    "read_labels_csv",
    "remove_temp_files",
    "save_image",
    "scan_image_files",
    "to_jsonable",
    "to_uint8",
    "write_csv",
    "write_json",
    "write_png",
]
