"""Tiny models and image folders for the command-line tests."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
from click.testing import CliRunner, Result
from PIL import Image

from robustkit.runs import attack as attack_module
from robustkit_cli.main import main

CLASSES = ("ant", "bee", "cat")


def tiny_cnn(channels: int, seed: int = 0) -> keras.Model:
    """A random 3-class CNN on 8x8 images with `channels` channels; outputs logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, channels)),
            keras.layers.Conv2D(4, 3, activation="tanh"),
            keras.layers.Flatten(),
            keras.layers.Dense(len(CLASSES)),
        ]
    )


def linear(weights: np.ndarray, shape: tuple[int, int, int]) -> keras.Model:
    """Flatten + Dense with the given weights [D, 3] and zero bias."""
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.layers[-1].set_weights([weights.astype(np.float32), np.zeros(3, np.float32)])
    return model


def save(model: keras.Model, path: Path) -> str:
    model.save(path)
    return str(path)


def write_images(root: Path, relatives: list[str], size=(8, 8), mode="L", seed=0) -> None:
    """Random 8-bit images at the given relative paths (format from the extension)."""
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    for relative in relatives:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        codes = rng.integers(0, 256, (*size, channels), dtype=np.uint8)
        Image.fromarray(codes[..., 0] if channels == 1 else codes, mode).save(path)


def class_tree(root: Path, per_class: int = 2, **options) -> list[str]:
    """root/<class>/<i>.png for the three classes; returns the relative paths, sorted."""
    relatives = [f"{name}/{i}.png" for name in CLASSES for i in range(per_class)]
    write_images(root, relatives, **options)
    return relatives


def invoke(*args: object) -> Result:
    """Run `robustkit attack ...` in-process; exceptions are caught as in a real run."""
    return CliRunner().invoke(main, ["attack", *map(str, args)])


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def interrupt_at_second_batch(monkeypatch) -> None:
    """Make attack runs stop with KeyboardInterrupt (a Ctrl-C) as their second batch starts."""
    original = attack_module.AttackRun.process_batch
    calls = []

    def interrupt_second_batch(self, batch):
        calls.append(batch)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(attack_module.AttackRun, "process_batch", interrupt_second_batch)
