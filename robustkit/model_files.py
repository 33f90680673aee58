"""Loading Keras model files (``.keras``, ``.h5``) with safe mode on, and saying why one fails.

A model file is hostile input until loaded: whatever Keras raises becomes one
:class:`~robustkit.errors.ModelLoadError` line that names the fix. A file that needs code to
load -- a Lambda layer -- loads only with ``safe_mode=False`` (CLI: ``--unsafe-load``); a file
naming a class Keras does not ship cannot be loaded from a file at all, only in Python with its
``custom_objects``. Keras never imports the modules a config names, safe mode or not.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import keras

from robustkit.errors import ModelLoadError, ModelNotFoundError, NotAModelError, UnsafeModelError

RESAVE = "re-save it with model.save('model.keras')"
_UNKNOWN_OBJECT = re.compile(r"Unknown (?:layer|object|class)[^']*'([^']+)'")


def _configs(node: Any) -> Iterator[dict[str, Any]]:
    """Every serialized object (a dict with ``class_name``) in a Keras config, depth first."""
    if isinstance(node, dict):
        if "class_name" in node:
            yield node
        for value in node.values():
            yield from _configs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _configs(value)


def _archive_config(path: str) -> Any:
    """The parsed ``config.json`` of a ``.keras`` archive; NotAModelError when it has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read("config.json")
    except KeyError:
        raise NotAModelError(
            f"{path!r} is a zip archive but not a Keras model (it has no config.json); give a "
            f"file written by model.save('model.keras')."
        ) from None
    except (OSError, zipfile.BadZipFile, RuntimeError) as error:
        raise NotAModelError(
            f"{path!r} is a damaged Keras model archive ({' '.join(str(error).split())}); copy "
            f"it again or {RESAVE}."
        ) from error
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotAModelError(
            f"{path!r} is a damaged Keras model archive (its config.json is not valid JSON: "
            f"{error}); copy it again or {RESAVE}."
        ) from error


def custom_classes(config: Any) -> list[str]:
    """Names of the objects in a Keras config that Keras itself does not ship (sorted);
    Keras' own markers (``__keras_tensor__``, ``__lambda__``, ...) are not classes."""
    names = set()
    for node in _configs(config):
        module, name = node.get("module"), str(node["class_name"])
        from_keras = isinstance(module, str) and (module == "keras" or module.startswith("keras."))
        if not (from_keras or name.startswith("__")):
            names.add(str(node.get("registered_name") or (f"{module}.{name}" if module else name)))
    return sorted(names)


def _custom_class_error(path: str, names: list[str]) -> ModelLoadError:
    return ModelLoadError(
        f"{path!r} uses {', '.join(repr(n) for n in names)}, not a class Keras ships, so it "
        "cannot be loaded from the file (unsafe loading does not help): load it in Python with "
        "keras.models.load_model(path, custom_objects=...) and pass the model to robustkit, "
        "or re-save it with built-in layers only."
    )


def _translate(path: str, error: Exception) -> ModelLoadError:
    """The one-line ModelLoadError for a file Keras failed to load."""
    message = " ".join(str(error).split())
    if "unsafe" in message.lower() or "safe_mode" in message:
        return UnsafeModelError(
            f"{path!r} contains code (e.g. a Lambda layer) that Keras will only load with "
            "safe mode off. Only do that for a file you trust: pass safe_mode=False "
            "(CLI: --unsafe-load)."
        )
    if path.lower().endswith(".keras"):
        names = custom_classes(_archive_config(path))
        if names:
            return _custom_class_error(path, names)
    unknown = _UNKNOWN_OBJECT.search(message)
    if unknown:
        return _custom_class_error(path, [unknown.group(1)])
    if isinstance(error, (OSError, ValueError)) and (
        "signature" in message.lower() or "truncated" in message.lower()
    ):
        reason = message.split("(", 1)[-1].rstrip(")") if "(" in message else message
        return NotAModelError(
            f"{path!r} is not a Keras model file or is damaged ({reason}); copy it again or "
            f"{RESAVE}."
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ModelLoadError(
        f"Could not load {path!r}: {first} (check that it was saved by Keras 3 with "
        "model.save; CLI: --debug shows Keras' full message)."
    )


def load_keras_model(
    path: str | os.PathLike[str],
    *,
    safe_mode: bool = True,
    custom_objects: dict[str, Any] | None = None,
) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` model file, uncompiled.

    ``safe_mode`` stays on unless the caller explicitly turns it off.

    Raises:
        ModelNotFoundError: the path does not exist.
        NotAModelError: the file is not a Keras model, or is damaged.
        UnsafeModelError: the model needs unsafe deserialization (e.g. Lambda layers).
        ModelLoadError: anything else Keras refuses (e.g. a custom class), in one line.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelNotFoundError(f"Model file not found: {path!r}. Check the path.")
    if os.path.isdir(path):
        raise NotAModelError(
            f"{path!r} is a directory. robustkit loads .keras or .h5 files; a TF SavedModel "
            "folder must first be re-saved with model.save('model.keras')."
        )
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise NotAModelError(f"{path!r} is not a .keras or .h5 file.")
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise NotAModelError(
            f"{path!r} is not a Keras model archive (not a readable .keras zip: truncated or "
            f"another kind of file); copy it again or {RESAVE}."
        )
    try:
        return keras.models.load_model(
            path, safe_mode=safe_mode, custom_objects=custom_objects, compile=False
        )
    except Exception as error:  # Keras raises many types on hostile files; translate them all
        raise _translate(path, error) from error
