"""Hostile image files: fuzzed bytes behind valid headers, truncations, decompression bombs,
zero-size and 1x1 images. Each is decoded or refused with one ImageReadError (a skip row with
its reason in a folder), never another exception."""

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from robustkit.errors import ImageReadError
from robustkit.io import ImageFolder, image_size, read_image

BOMB_REASON = (
    f"too many pixels to decode safely (over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,}, "
    "PIL.Image.MAX_IMAGE_PIXELS; raise it only for files you trust)."
)
UNIDENTIFIED = "not a readable image (Pillow cannot identify it)."


def encoded(fmt: str, size: tuple[int, int] = (12, 10)) -> bytes:
    """A valid image file of ``fmt`` (random RGB pixels)."""
    codes = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    stream = io.BytesIO()
    Image.fromarray(codes).save(stream, fmt)
    return stream.getvalue()


VALID = {fmt: encoded(fmt.upper()) for fmt in ("png", "jpeg", "gif", "tiff")}
SUFFIX = {fmt: f".{fmt}" for fmt in VALID}
HEADER_LENGTH = {"png": 33, "jpeg": 20, "gif": 13, "tiff": 8}  # signature + first header


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 8-bit gray pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def decode_or_refuse(path) -> None:
    """Decode ``path`` both ways a run does: only ImageReadError (one line naming the file) may
    come out, and what decodes is what was asked for (uint8 codes of the file's own size with
    3 channels, or 8x8 with 1 channel when resized)."""

    def check_rgb() -> None:
        height, width = image_size(path)
        codes, _ = read_image(path, channels=3)
        assert codes.dtype == np.uint8 and codes.shape == (height, width, 3)

    def check_resized_gray() -> None:
        codes, _ = read_image(path, channels=1, size=(8, 8), resize="bilinear")
        assert codes.dtype == np.uint8 and codes.shape == (8, 8, 1)

    for check in (check_rgb, check_resized_gray):
        try:
            check()
        except ImageReadError as error:
            message = str(error)
            assert message.startswith(f"{path}: ") and "\n" not in message


FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    fmt=st.sampled_from(sorted(VALID)),
    tail=st.binary(max_size=300),
    keep=st.integers(min_value=0, max_value=40),
)
def test_random_bytes_behind_a_valid_header(tmp_path, fmt, tail, keep):
    path = tmp_path / f"fuzz{SUFFIX[fmt]}"
    path.write_bytes(VALID[fmt][: HEADER_LENGTH[fmt] + keep] + tail)
    decode_or_refuse(path)


@FUZZ
@given(fmt=st.sampled_from(sorted(VALID)), fraction=st.floats(min_value=0.0, max_value=1.0))
def test_files_truncated_at_any_offset(tmp_path, fmt, fraction):
    data = VALID[fmt]
    path = tmp_path / f"cut{SUFFIX[fmt]}"
    path.write_bytes(data[: int(fraction * len(data))])
    decode_or_refuse(path)


@FUZZ
@given(
    fmt=st.sampled_from(sorted(VALID)),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=12),
)
def test_files_with_corrupted_bytes(tmp_path, fmt, flips):
    data = bytearray(VALID[fmt])
    for offset, value in flips:
        data[offset % len(data)] = value
    path = tmp_path / f"flip{SUFFIX[fmt]}"
    path.write_bytes(bytes(data))
    decode_or_refuse(path)


@pytest.mark.parametrize("side", [100_000, 10_000])  # past 2x the limit (error), past 1x (warning)
def test_decompression_bombs_are_refused_from_the_header(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(side, side))
    for read in (lambda: image_size(path), lambda: read_image(path, channels=1)):
        with pytest.raises(ImageReadError) as caught:
            read()
        assert str(caught.value) == f"{path}: {BOMB_REASON}"


def test_a_folder_of_hostile_files_gives_one_skip_row_each(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    (root / "zero.png").write_bytes(png_declaring(0, 0))
    (root / "zero.gif").write_bytes(b"GIF89a\x00\x00\x00\x00\x00\x00\x00;")
    (root / "header_only.jpeg").write_bytes(VALID["jpeg"][:20])
    (root / "half.jpeg").write_bytes(VALID["jpeg"][: len(VALID["jpeg"]) // 2])
    (root / "half.png").write_bytes(VALID["png"][: len(VALID["png"]) // 2])
    Image.fromarray(np.full((1, 1, 3), 7, np.uint8)).save(root / "one_pixel.png")
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(root / "good.png")

    folder = ImageFolder(root, image_shape=(8, 8, 3), resize="nearest")
    folder.check_sizes()
    skipped = {skip.relative: skip.reason for skip in folder.skipped}
    batch = folder.read_batch(folder.entries)
    skipped.update({skip.relative: skip.reason for skip in batch.skipped})
    assert skipped == {
        "bomb.png": BOMB_REASON,
        "zero.png": UNIDENTIFIED,
        "zero.gif": UNIDENTIFIED,
        "header_only.jpeg": UNIDENTIFIED,
        "half.jpeg": "cannot decode the image (Truncated File Read).",  # from the header
        "half.png": "cannot decode the image (image file is truncated).",  # from the pixels
    }
    assert [entry.relative for entry in batch.entries] == ["good.png", "one_pixel.png"]
    assert np.all(batch.codes[0] == 9) and np.all(batch.codes[1] == 7)  # 1x1 resized


def test_strict_mode_raises_on_the_first_hostile_file(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "good.png")
    folder = ImageFolder(tmp_path, image_shape=(8, 8, 1), strict=True)
    with pytest.raises(ImageReadError, match="too many pixels to decode safely"):
        folder.check_sizes()
