"""Rendering: sizes, no uint8 wrap-around, blank all-zero maps, reductions, PNG round trips."""

import warnings

import numpy as np
import pytest
from PIL import Image

from robustkit.errors import InputError
from robustkit.saliency import (
    Attribution,
    heatmap,
    overlay,
    panel,
    reduce_channels,
    save,
    scale_map,
)
from robustkit.saliency.render import DEFAULT_COLORMAPS, OVERLAY_BRIGHTNESS, colormap

RNG = np.random.default_rng(2)


def luminance(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("L"), dtype=np.float64)


def test_reductions_have_their_closed_forms() -> None:
    maps = np.array([[[[3.0, -4.0, 0.0]]]])  # one pixel, three channels
    assert reduce_channels(maps, "sum")[0, 0, 0] == -1.0
    assert reduce_channels(maps, "abs-sum")[0, 0, 0] == 7.0
    assert reduce_channels(maps, "max")[0, 0, 0] == 4.0
    assert reduce_channels(maps, "l2")[0, 0, 0] == 5.0
    with pytest.raises(InputError):
        reduce_channels(maps, "mean")


@pytest.mark.parametrize("shape", [(5, 7, 3), (9, 4, 1), (6, 6)])
def test_heatmaps_have_the_map_size_times_scale(shape: tuple[int, ...]) -> None:
    values = RNG.normal(size=shape)
    for scale in (1, 3):
        picture = heatmap(values, scale=scale)
        assert picture.mode == "RGB"
        assert picture.size == (shape[1] * scale, shape[0] * scale)


def test_heatmap_of_an_attribution_draws_the_chosen_image(tmp_path) -> None:
    maps = RNG.normal(size=(3, 4, 5, 2)).astype(np.float32)
    attribution = Attribution(maps, np.zeros(3), np.zeros(3), "gradient")
    np.testing.assert_array_equal(
        np.asarray(heatmap(attribution, index=2)), np.asarray(heatmap(maps[2]))
    )
    path = tmp_path / "sub" / "map.png"
    picture = heatmap(attribution, index=1, scale=2)
    save(picture, path)
    with Image.open(path) as reread:
        assert reread.format == "PNG" and reread.size == (10, 8)
        np.testing.assert_array_equal(np.asarray(reread.convert("RGB")), np.asarray(picture))


def test_negative_heavy_map_never_turns_bright() -> None:
    # The classic bug: (map * 255).astype(uint8) sends -0.01 to 253, a bright pixel.
    values = -RNG.uniform(0.001, 1.0, size=(8, 8))
    values[0, 0] = 0.5  # one positive pixel
    signed = heatmap(values, reduction="sum")
    lum = luminance(signed)
    np.testing.assert_array_equal(np.asarray(signed)[1:, :], 0)  # negatives: the colormap's black
    assert lum[0, 0] == lum.max() > 200
    diverging = np.asarray(heatmap(values, view="diverging"), dtype=int)
    negative = values < 0
    assert np.all(diverging[negative][:, 2] > diverging[negative][:, 0])  # blue side, never red
    assert luminance(heatmap(values, view="diverging"))[negative].max() < 160
    assert luminance(heatmap(-np.ones((4, 4)), reduction="sum")).max() == 0


def test_brightness_rises_with_the_value_and_saturates_without_wrapping() -> None:
    ramp = np.concatenate([np.linspace(0.0, 1.0, 300), [5.0, 1e6, 1e30]])[None, :]
    lum = luminance(heatmap(ramp, percentile=100 * 299 / 302))
    assert np.all(np.diff(lum[0]) >= -1.0)  # fire is monotone in lightness (rounding aside)
    assert lum[0, -1] == lum[0, -2] == lum[0, -3] == lum.max()


def test_percentile_clipping_saturates_the_top_values() -> None:
    values = np.arange(100, dtype=np.float64).reshape(10, 10)
    unit = scale_map(values, "sequential", percentile=90)
    assert np.all(unit[values >= np.percentile(values, 90)] == 1.0)
    assert np.all(unit[values < np.percentile(values, 90)] < 1.0)
    sparse = np.zeros((10, 10))
    sparse[3, 4] = 2.0  # 99th percentile is 0: the maximum is used instead
    assert scale_map(sparse)[3, 4] == 1.0
    symmetric = scale_map(np.array([[-2.0, 0.0, 1.0]]), "diverging", percentile=100)
    np.testing.assert_allclose(symmetric, [[0.0, 0.5, 0.75]])


def test_all_zero_map_renders_blank_without_warnings(tmp_path) -> None:
    zeros = np.zeros((6, 5, 3))
    image = RNG.random((6, 5, 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            sequential = np.asarray(heatmap(zeros))
            diverging = np.asarray(heatmap(zeros, view="diverging"))
            blended = np.asarray(overlay(image, zeros))
    np.testing.assert_array_equal(
        sequential,
        colormap(DEFAULT_COLORMAPS["sequential"])[0][None, None].repeat(6, 0).repeat(5, 1),
    )
    assert len(np.unique(diverging.reshape(-1, 3), axis=0)) == 1  # one colour: blank
    grey = np.rint(OVERLAY_BRIGHTNESS * np.rint(image * 255))
    np.testing.assert_allclose(blended, np.repeat(grey, 3, axis=-1), atol=1)
    save(heatmap(zeros), tmp_path / "zero.png")
    with Image.open(tmp_path / "zero.png") as reread:
        assert reread.size == (5, 6)


def test_non_finite_maps_and_bad_options_raise() -> None:
    with pytest.raises(InputError, match="NaN"):
        heatmap(np.full((3, 3), np.nan))
    with pytest.raises(InputError):
        heatmap(np.ones((3, 3)), view="rainbow")
    with pytest.raises(InputError):
        heatmap(np.ones((3, 3)), cmap="no-such-map")
    with pytest.raises(InputError):
        heatmap(np.ones((3, 3)), percentile=0)
    with pytest.raises(InputError):
        overlay(np.zeros((4, 4, 1), np.float32), np.ones((3, 3)))
    with pytest.raises(InputError):
        overlay(np.full((3, 3, 1), 2.0, np.float32), np.ones((3, 3)))  # image outside bounds


def test_overlay_colours_only_salient_pixels() -> None:
    image = np.full((4, 4, 3), 0.5, np.float32)
    values = np.zeros((4, 4))
    values[1, 2] = 1.0
    blended = np.asarray(overlay(image, values, alpha=1.0), dtype=int)
    heat = np.asarray(heatmap(values), dtype=int)
    np.testing.assert_array_equal(blended[1, 2], heat[1, 2])  # full strength, alpha 1: the heat
    untouched = np.ones((4, 4), bool)
    untouched[1, 2] = False
    grey = round(OVERLAY_BRIGHTNESS * 128)
    assert np.all(np.abs(blended[untouched] - grey) <= 1)


def test_panel_puts_tiles_side_by_side() -> None:
    image = RNG.random((5, 7, 1)).astype(np.float32)
    adversarial = np.clip(image + 0.1, 0, 1)
    values = RNG.normal(size=(5, 7, 1))
    plain = panel(image, values)
    assert plain.size == (3 * 7 + 2 * 2, 5)
    with_adversarial = panel(image, values, adversarial=adversarial, scale=2)
    assert with_adversarial.size == (2 * (4 * 7 + 3 * 2), 10)
    tiles = np.asarray(panel(image, values, adversarial=adversarial))
    codes = np.rint(image[..., 0] * 255)
    np.testing.assert_array_equal(tiles[:, :7, 0], codes)
    np.testing.assert_array_equal(tiles[:, 7:9], 255)  # the gap
    np.testing.assert_array_equal(tiles[:, 9:16, 0], np.rint(adversarial[..., 0] * 255))
    np.testing.assert_array_equal(tiles[:, 18:25], np.asarray(heatmap(values)))
