"""Exact PyTorch twin of a small Keras image classifier (benchmark-only tooling).

This module is NOT part of robustkit and robustkit never imports it: it exists so that reference
attack implementations written for PyTorch (torchattacks) can be run against the very same
network that robustkit evaluates. Run it with the separate benchmark venv (/work/benchvenv, see
benchmarks/reference_autoattack.py for the install commands).

Supported Keras layers (Sequential, or a plain chain): Conv2D, MaxPooling2D, Flatten, Dense,
Dropout, ReLU and Activation('relu' | 'linear'), channels_last, padding 'valid' or 'same'. The
Keras model takes NHWC images; the twin takes NCHW images (as torchattacks expects) and permutes
back to NHWC right before Flatten, so the flattened feature order, and hence the Dense weights,
match Keras exactly. Weights are copied, never re-trained.

    python benchmarks/torch_twin.py examples/mnist_robust.keras examples/mnist_cnn.keras

prints, for each model, the max |logit difference| and the argmax agreement on MNIST test digits
and on uniform-noise images, and exits non-zero if a twin is not exact (diff >= 1e-4 or any
argmax disagreement).
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TOLERANCE = 1e-4  # max |logit difference| allowed between Keras and its twin
DEFAULT_MNIST = "/work/shared/data/mnist"


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) along one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class TFSamePad(nn.Module):
    """Pads an NCHW tensor the way TensorFlow's padding='same' does (extra pixel after)."""

    def __init__(
        self,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        dilation: tuple[int, int],
        value: float,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.dilation, self.value = kernel, stride, dilation, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad height and width."""
        top, bottom = _same_padding(x.shape[2], self.kernel[0], self.stride[0], self.dilation[0])
        left, right = _same_padding(x.shape[3], self.kernel[1], self.stride[1], self.dilation[1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom), value=self.value)


class FlattenNHWC(nn.Module):
    """Flattens an NCHW tensor in Keras' channels_last (NHWC) order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Permute to NHWC, then flatten."""
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)


def _activation(name: str, layer_name: str) -> list[nn.Module]:
    """Torch modules for a Keras activation name (logits models only)."""
    if name == "relu":
        return [nn.ReLU()]
    if name == "linear":
        return []
    raise ValueError(f"layer {layer_name}: activation {name!r} is not supported by the twin")


def _pair(value: Any) -> tuple[int, int]:
    """An int or a pair as a pair of ints."""
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def _conv(layer: Any) -> list[nn.Module]:
    """Torch modules equivalent to a Keras Conv2D layer, weights copied."""
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last" or cfg.get("groups", 1) != 1:
        raise ValueError(f"layer {layer.name}: only channels_last, groups=1 convolutions")
    weights = layer.get_weights()
    kernel = weights[0]  # (kh, kw, in, out)
    kh, kw, c_in, c_out = kernel.shape
    stride, dilation = _pair(cfg["strides"]), _pair(cfg["dilation_rate"])
    conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=stride, dilation=dilation, bias=cfg["use_bias"])
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
        if cfg["use_bias"]:
            conv.bias.copy_(torch.from_numpy(weights[1]))
    modules: list[nn.Module] = []
    if cfg["padding"] == "same":
        modules.append(TFSamePad((kh, kw), stride, dilation, 0.0))
    elif cfg["padding"] != "valid":
        raise ValueError(f"layer {layer.name}: padding {cfg['padding']!r} is not supported")
    modules.append(conv)
    return modules + _activation(cfg["activation"], layer.name)


def _pool(layer: Any) -> list[nn.Module]:
    """Torch modules equivalent to a Keras MaxPooling2D layer."""
    cfg = layer.get_config()
    if cfg.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"layer {layer.name}: only channels_last pooling")
    pool = _pair(cfg["pool_size"])
    stride = _pair(cfg["strides"] if cfg["strides"] is not None else cfg["pool_size"])
    modules: list[nn.Module] = []
    if cfg["padding"] == "same":
        modules.append(TFSamePad(pool, stride, (1, 1), -math.inf))
    elif cfg["padding"] != "valid":
        raise ValueError(f"layer {layer.name}: padding {cfg['padding']!r} is not supported")
    modules.append(nn.MaxPool2d(pool, stride))
    return modules


def _dense(layer: Any) -> list[nn.Module]:
    """Torch modules equivalent to a Keras Dense layer on flat input, weights copied."""
    cfg = layer.get_config()
    weights = layer.get_weights()
    kernel = weights[0]  # (in, out)
    dense = nn.Linear(kernel.shape[0], kernel.shape[1], bias=cfg["use_bias"])
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
        if cfg["use_bias"]:
            dense.bias.copy_(torch.from_numpy(weights[1]))
    return [dense, *_activation(cfg["activation"], layer.name)]


def _relu(layer: Any) -> list[nn.Module]:
    """A plain Keras ReLU layer (no max_value, slope or threshold)."""
    cfg = layer.get_config()
    if (
        cfg.get("max_value") is not None
        or cfg.get("negative_slope", 0.0) != 0.0
        or cfg.get("threshold", 0.0) != 0.0
    ):
        raise ValueError(f"layer {layer.name}: only a plain ReLU is supported")
    return [nn.ReLU()]


def twin_from_model(model: Any) -> nn.Sequential:
    """Build the NCHW PyTorch twin of a loaded Keras model (eval mode, frozen float32)."""
    modules: list[nn.Module] = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Conv2D":
            modules += _conv(layer)
        elif kind == "MaxPooling2D":
            modules += _pool(layer)
        elif kind == "Flatten":
            if layer.get_config().get("data_format", "channels_last") != "channels_last":
                raise ValueError(f"layer {layer.name}: only channels_last Flatten")
            modules.append(FlattenNHWC())
        elif kind == "Dense":
            modules += _dense(layer)
        elif kind == "Dropout":
            continue  # identity at inference
        elif kind == "ReLU":
            modules += _relu(layer)
        elif kind == "Activation":
            modules += _activation(layer.get_config()["activation"], layer.name)
        else:
            raise ValueError(f"layer {layer.name}: {kind} is not supported by the twin")
    twin = nn.Sequential(*modules).float().eval()
    twin.requires_grad_(False)
    return twin


def load_keras(path: str | Path) -> Any:
    """Load a .keras model without its training configuration."""
    import keras

    return keras.saving.load_model(str(path), compile=False)


def twin_from_keras(path: str | Path) -> nn.Module:
    """Load a .keras model and return its exact PyTorch twin (input NCHW in [0, 1])."""
    return twin_from_model(load_keras(path))


def keras_logits(model: Any, images_nhwc: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits of the Keras model on NHWC float images (a fresh forward pass, training=False)."""
    out = [
        np.asarray(model(images_nhwc[i : i + batch_size], training=False))
        for i in range(0, len(images_nhwc), batch_size)
    ]
    return np.concatenate(out).astype(np.float32)


def twin_logits(twin: nn.Module, images_nhwc: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Logits of the twin on NHWC float images (transposed to NCHW here)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images_nhwc), batch_size):
            chunk = np.ascontiguousarray(images_nhwc[i : i + batch_size].transpose(0, 3, 1, 2))
            out.append(twin(torch.from_numpy(chunk)).numpy())
    return np.concatenate(out).astype(np.float32)


@dataclass
class TwinCheck:
    """How closely the twin's logits match the Keras model's on some images."""

    n_images: int
    max_abs_diff: float
    argmax_disagreements: int
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        """Diff below tolerance and the same argmax everywhere."""
        return self.max_abs_diff < self.tolerance and self.argmax_disagreements == 0


def compare_logits(
    model: Any, twin: nn.Module, images_nhwc: np.ndarray, batch_size: int = 1000
) -> TwinCheck:
    """Compare Keras and twin logits on NHWC images in [0, 1]."""
    images = np.asarray(images_nhwc, dtype=np.float32)
    ref, mine = keras_logits(model, images, batch_size), twin_logits(twin, images, batch_size)
    return TwinCheck(
        n_images=len(images),
        max_abs_diff=float(np.max(np.abs(ref - mine))) if len(images) else 0.0,
        argmax_disagreements=int(np.sum(ref.argmax(1) != mine.argmax(1))),
    )


def check_twin(
    model: Any, twin: nn.Module, images_nhwc: np.ndarray, batch_size: int = 1000
) -> TwinCheck:
    """compare_logits, raising ValueError unless diff < 1e-4 with the same argmax."""
    result = compare_logits(model, twin, images_nhwc, batch_size)
    if not result.ok:
        raise ValueError(f"PyTorch twin does not match the Keras model: {result}")
    return result


def _read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) as a uint8 array."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist_test(
    directory: str | Path = DEFAULT_MNIST, first: int = 0, count: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST test digits [first, first+count) as NHWC float32 /255 and int64 labels."""
    directory = Path(directory)
    images = _read_idx(directory / "t10k-images-idx3-ubyte.gz")
    labels = _read_idx(directory / "t10k-labels-idx1-ubyte.gz")
    stop = len(labels) if count is None else first + count
    if not 0 <= first < stop <= len(labels):
        raise ValueError(f"digits [{first}, {stop}) are outside the {len(labels)} test digits")
    x = images[first:stop, :, :, None].astype(np.float32) / 255.0
    return x, labels[first:stop].astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    """Check the twins of the given models on MNIST test digits and on noise images."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help=".keras model paths")
    parser.add_argument("--mnist", default=DEFAULT_MNIST, help="folder with the t10k files")
    parser.add_argument("--first", type=int, default=8000)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--noise", type=int, default=1000, help="uniform-noise images too")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    digits, _ = load_mnist_test(args.mnist, args.first, args.count)
    noise = np.random.default_rng(0).random((args.noise, 28, 28, 1), dtype=np.float32)
    failed = False
    for path in args.models:
        model = load_keras(path)
        twin = twin_from_model(model)
        for name, images in (("mnist", digits), ("noise", noise)):
            result = compare_logits(model, twin, images)
            failed |= not result.ok
            print(f"{path} [{name}] {asdict(result)} ok={result.ok}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
