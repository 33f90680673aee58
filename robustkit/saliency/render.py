"""Saliency maps as pictures: channel reduction, display scaling, perceptual colormaps, PNG.

Colormaps come from colorcet (Kovesi's perceptually uniform maps): ``fire`` (black → red →
yellow → white) for magnitudes and ``bkr`` (blue ← black → red, CET-D4) for signed maps, so
zero is black in both views and an all-zero map renders as a blank black image. Values become
colour indices by clipping in floating point before the cast to uint8, so nothing wraps around.
"""

from __future__ import annotations

import os
from typing import Any

import colorcet
import numpy as np
from PIL import Image

from robustkit.errors import InputError
from robustkit.io import to_uint8, write_png
from robustkit.saliency.attribution import Attribution

REDUCTIONS = ("sum", "abs-sum", "max", "l2")
VIEWS = ("sequential", "diverging")
DEFAULT_COLORMAPS = {"sequential": "fire", "diverging": "bkr"}
DEFAULT_REDUCTIONS = {"sequential": "abs-sum", "diverging": "sum"}
PANEL_GAP = 2  # white pixels between the tiles of a panel
OVERLAY_BRIGHTNESS = 0.5  # the image under an overlay is grey and dimmed so colours stand out


def reduce_channels(maps: Any, reduction: str = "abs-sum") -> np.ndarray:
    """Collapse the channel axis of maps [..., H, W, C] to [..., H, W] (float64).

    "sum" keeps the sign; "abs-sum" sums magnitudes; "max" takes the largest magnitude over
    channels (Simonyan et al. 2014); "l2" the Euclidean norm over channels.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if reduction == "sum":
        return maps.sum(axis=-1)
    if reduction == "abs-sum":
        return np.abs(maps).sum(axis=-1)
    if reduction == "max":
        return np.abs(maps).max(axis=-1)
    if reduction == "l2":
        return np.sqrt(np.square(maps).sum(axis=-1))
    raise InputError(f"Unknown channel reduction {reduction!r}; use one of {REDUCTIONS}.")


def _clip_level(magnitudes: np.ndarray, percentile: float) -> float:
    """The value shown at full strength: a percentile of the magnitudes, or their maximum when
    that percentile is 0 (maps with few non-zero pixels); 0 for an all-zero map."""
    level = float(np.percentile(magnitudes, percentile))
    return level if level > 0 else float(magnitudes.max())


def scale_map(values: Any, view: str = "sequential", percentile: float = 99.0) -> np.ndarray:
    """Map a 2-D map [H, W] to [0, 1] for display.

    "sequential": negative values show as 0, the rest is divided by the ``percentile`` of
    max(values, 0) over all pixels (by its maximum where that percentile is 0) and clipped at
    1. "diverging": a symmetric range ±r with r the ``percentile`` of |values| (or their
    maximum), 0.5 standing for zero. An all-zero map gives 0 (sequential) or 0.5 (diverging).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise InputError(f"scale_map needs a 2-D map [H, W], got shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise InputError("The saliency map holds NaN or Inf values; it cannot be drawn.")
    if not 0 < float(percentile) <= 100:
        raise InputError(f"percentile must be in (0, 100], got {percentile!r}.")
    if view == "sequential":
        positive = np.maximum(values, 0.0)
        level = _clip_level(positive, percentile) if positive.size else 0.0
        return np.clip(positive / level, 0.0, 1.0) if level > 0 else np.zeros_like(values)
    if view == "diverging":
        level = _clip_level(np.abs(values), percentile) if values.size else 0.0
        signed = np.clip(values / level, -1.0, 1.0) if level > 0 else np.zeros_like(values)
        return (signed + 1.0) / 2.0
    raise InputError(f"Unknown view {view!r}; use one of {VIEWS}.")


def colormap(name: str) -> np.ndarray:
    """A colorcet palette as uint8 RGB [256, 3]."""
    if name not in colorcet.palette:
        raise InputError(f"Unknown colormap {name!r}; use a colorcet palette name such as 'fire'.")
    hex_colours = colorcet.palette[name]
    table = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in hex_colours], np.uint8)
    if len(table) != 256:
        positions = np.linspace(0, len(table) - 1, 256)
        table = table[np.rint(positions).astype(int)]
    return table


def colorize(unit: np.ndarray, cmap: str) -> np.ndarray:
    """uint8 RGB [H, W, 3] for values in [0, 1] [H, W] (clipped before the cast)."""
    index = np.clip(np.rint(np.asarray(unit, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return colormap(cmap)[index]


def _one_map(attr: Attribution | Any, index: int) -> np.ndarray:
    """The map [H, W, C] (or [H, W]) to draw from an Attribution or an array."""
    maps = attr.maps if isinstance(attr, Attribution) else np.asarray(attr)
    if maps.ndim == 4:
        maps = maps[index]
    if maps.ndim == 2:
        maps = maps[..., None]
    if maps.ndim != 3:
        raise InputError(f"A saliency map must be [H, W, C] or [N, H, W, C], got {maps.shape}.")
    return maps


def _to_image(codes: np.ndarray, scale: int) -> Image.Image:
    if int(scale) < 1:
        raise InputError(f"scale must be an integer >= 1, got {scale!r}.")
    image = Image.fromarray(codes, "RGB")
    if scale == 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _heat(
    attr: Attribution | Any,
    index: int,
    reduction: str | None,
    view: str,
    percentile: float,
    cmap: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB codes [H, W, 3], strength in [0, 1] [H, W]) of one map."""
    if view not in VIEWS:
        raise InputError(f"Unknown view {view!r}; use one of {VIEWS}.")
    values = reduce_channels(_one_map(attr, index), reduction or DEFAULT_REDUCTIONS[view])
    unit = scale_map(values, view, percentile)
    strength = unit if view == "sequential" else np.abs(2.0 * unit - 1.0)
    return colorize(unit, cmap or DEFAULT_COLORMAPS[view]), strength


def heatmap(
    attr: Attribution | Any,
    *,
    index: int = 0,
    reduction: str | None = None,
    view: str = "sequential",
    percentile: float = 99.0,
    cmap: str | None = None,
    scale: int = 1,
) -> Image.Image:
    """The map as an RGB Pillow image of size (W * scale, H * scale).

    Args:
        attr: an :class:`Attribution` (image ``index`` is drawn) or a map [H, W, C] / [H, W].
        reduction: channel reduction (see :func:`reduce_channels`); default "abs-sum" for the
            sequential view and "sum" for the diverging view.
        view: "sequential" (magnitudes, clipped at ``percentile``) or "diverging" (signed,
            symmetric range).
        cmap: a colorcet palette name; default "fire" (sequential) or "bkr" (diverging).
        scale: integer nearest-neighbour enlargement.
    """
    codes, _ = _heat(attr, index, reduction, view, percentile, cmap)
    return _to_image(codes, scale)


def _image_codes(image: Any, bounds: tuple[float, float]) -> np.ndarray:
    """uint8 RGB [H, W, 3] of an image: float [H, W, C] in bounds, uint8 [H, W, C] or Pillow."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
        raise InputError(f"An image must be [H, W, 1 or 3], got shape {pixels.shape}.")
    codes = pixels if pixels.dtype == np.uint8 else to_uint8(pixels, bounds)
    return np.repeat(codes, 3, axis=-1) if codes.shape[-1] == 1 else codes


def _blend(
    image_codes: np.ndarray, heat: np.ndarray, strength: np.ndarray, alpha: float
) -> np.ndarray:
    """Heat colours mixed over the image's dimmed grey (ITU-R BT.601 luma) by alpha × strength."""
    if image_codes.shape[:2] != heat.shape[:2]:
        raise InputError(
            f"The image is {image_codes.shape[:2]} but the map is {heat.shape[:2]} (H, W)."
        )
    grey = OVERLAY_BRIGHTNESS * (image_codes @ np.array([0.299, 0.587, 0.114]))[..., None]
    weight = float(alpha) * strength[..., None]
    mixed = (1.0 - weight) * grey + weight * heat
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def overlay(
    image: Any,
    attr: Attribution | Any,
    alpha: float = 0.6,
    *,
    index: int = 0,
    bounds: tuple[float, float] = (0.0, 1.0),
    reduction: str | None = None,
    view: str = "sequential",
    percentile: float = 99.0,
    cmap: str | None = None,
    scale: int = 1,
) -> Image.Image:
    """The heatmap blended over the image, as an RGB Pillow image.

    The image is shown in grey at :data:`OVERLAY_BRIGHTNESS`; each pixel mixes in the heatmap
    colour with weight ``alpha`` × its display strength (0 for zero saliency), so unimportant
    pixels show just the dimmed image. ``image`` is float
    [H, W, C] in ``bounds``, uint8 [H, W, C] or a Pillow image; other arguments as for
    :func:`heatmap`.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha!r}.")
    heat, strength = _heat(attr, index, reduction, view, percentile, cmap)
    return _to_image(_blend(_image_codes(image, bounds), heat, strength, alpha), scale)


def panel(
    image: Any,
    attr: Attribution | Any,
    adversarial: Any = None,
    *,
    alpha: float = 0.6,
    index: int = 0,
    bounds: tuple[float, float] = (0.0, 1.0),
    reduction: str | None = None,
    view: str = "sequential",
    percentile: float = 99.0,
    cmap: str | None = None,
    scale: int = 1,
) -> Image.Image:
    """Side by side: the image, the adversarial image (when given), the heatmap and the overlay.

    The map is taken to explain the adversarial image when one is given, so the overlay is
    drawn on it. Tiles are separated by white gaps of :data:`PANEL_GAP` pixels (× scale).
    """
    heat, strength = _heat(attr, index, reduction, view, percentile, cmap)
    clean = _image_codes(image, bounds)
    explained = clean if adversarial is None else _image_codes(adversarial, bounds)
    tiles = [clean] + ([] if adversarial is None else [explained])
    tiles += [heat, _blend(explained, heat, strength, alpha)]
    if any(tile.shape != heat.shape for tile in tiles):
        raise InputError(
            "The image, adversarial image and map must have the same height and width."
        )
    gap = np.full((heat.shape[0], PANEL_GAP, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return _to_image(np.concatenate(row, axis=1), scale)


def save(picture: Image.Image, path: str | os.PathLike[str]) -> None:
    """Write a picture from :func:`heatmap`, :func:`overlay` or :func:`panel` as a PNG,
    atomically (an interrupted write never leaves half a file)."""
    write_png(path, np.asarray(picture.convert("RGB")))
