"""Image decoding, folder scanning, label sources and the MNIST loader."""

import gzip

import numpy as np
import pytest
from PIL import Image

from robustkit.errors import ImageReadError, InputError
from robustkit.io import (
    ImageFolder,
    load_mnist,
    read_class_names,
    read_image,
    read_labels_csv,
    scan_image_files,
)
from robustkit.io.images import NOTE_16_BIT, NOTE_ALPHA, NOTE_FIRST_FRAME, NOTE_TO_GRAY, NOTE_TO_RGB

RNG = np.random.default_rng(0)


def rgb(height=6, width=5):
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("suffix", "options"),
    [(".png", {}), (".bmp", {}), (".tiff", {}), (".webp", {"lossless": True})],
)
def test_lossless_formats_decode_exactly(tmp_path, suffix, options):
    codes = rgb()
    Image.fromarray(codes).save(tmp_path / f"a{suffix}", **options)
    read, notes = read_image(tmp_path / f"a{suffix}", channels=3)
    assert np.array_equal(read, codes) and notes == []


def test_jpeg_decodes_to_the_shape_asked(tmp_path):
    Image.fromarray(rgb(8, 8)).save(tmp_path / "a.jpg", quality=95)
    read, _ = read_image(tmp_path / "a.jpg", channels=3, size=(8, 8))
    assert read.shape == (8, 8, 3) and read.dtype == np.uint8


def test_gif_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((4, 4), value, np.uint8)) for value in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    read, notes = read_image(tmp_path / "a.gif", channels=1)
    assert np.all(read == 10) and NOTE_FIRST_FRAME in notes


def test_colour_to_grayscale_uses_itu_601_luma(tmp_path):
    codes = rgb()
    Image.fromarray(codes).save(tmp_path / "a.png")
    read, notes = read_image(tmp_path / "a.png", channels=1)
    luma = (codes.astype(np.int64) @ np.array([19595, 38470, 7471]) + 2**15) >> 16
    assert np.array_equal(read[..., 0], luma) and notes == [NOTE_TO_GRAY]


def test_grayscale_to_rgb_replicates(tmp_path):
    gray = RNG.integers(0, 256, (4, 4), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "a.png")
    read, notes = read_image(tmp_path / "a.png", channels=3)
    assert np.array_equal(read, np.repeat(gray[..., None], 3, axis=2)) and notes == [NOTE_TO_RGB]


def test_alpha_is_dropped_with_a_note(tmp_path):
    rgba = RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    read, notes = read_image(tmp_path / "a.png", channels=3)
    assert np.array_equal(read, rgba[..., :3]) and notes == [NOTE_ALPHA]
    palette = Image.fromarray(rgba[..., 0] % 4, "P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] * 64)
    palette.save(tmp_path / "p.png", transparency=0)
    read, notes = read_image(tmp_path / "p.png", channels=3)
    assert NOTE_ALPHA in notes
    assert np.array_equal(
        read[rgba[..., 0] % 4 == 1], np.tile([255, 0, 0], (np.sum(rgba[..., 0] % 4 == 1), 1))
    )


def test_16_bit_is_reduced_to_the_nearest_8_bit_code(tmp_path):
    values = np.array([[0, 257, 65535, 128 * 257 + 100]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    read, notes = read_image(tmp_path / "a.png", channels=1)
    assert read[..., 0].tolist() == [[0, 1, 255, 128]] and notes == [NOTE_16_BIT]


def test_size_mismatch_is_refused_without_a_resize_method(tmp_path):
    Image.fromarray(rgb(10, 12)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"12x10 pixels but the model takes 4x4.*--resize"):
        read_image(tmp_path / "a.png", channels=3, size=(4, 4))
    read, notes = read_image(tmp_path / "a.png", channels=3, size=(4, 4), resize="nearest")
    assert read.shape == (4, 4, 3) and notes == ["resized to 4x4 (nearest)"]


def test_corrupt_truncated_and_non_image_files_raise_image_read_error(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    for name in ("text.png", "cut.png", "missing.png"):
        with pytest.raises(ImageReadError, match=name):
            read_image(tmp_path / name, channels=3)


def make_tree(root, files):
    for relative in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith((".png", ".jpg")):
            Image.fromarray(np.full((4, 4), len(relative), np.uint8)).save(path)
        else:
            path.write_text("x")


def test_scan_is_recursive_sorted_and_skips_hidden_and_non_images(tmp_path):
    make_tree(
        tmp_path, ["b/2.png", "a/1.jpg", "a/notes.txt", ".hidden/x.png", "a/.DS_Store", "c.PNG"]
    )
    root, images, skipped = scan_image_files(tmp_path)
    assert root == tmp_path
    assert images == ["a/1.jpg", "b/2.png", "c.PNG"]
    assert [(s.relative, s.reason) for s in skipped] == [
        ("a/notes.txt", "not an image file (.txt extension)")
    ]
    root, images, skipped = scan_image_files(tmp_path / "b" / "2.png")
    assert (root, images, skipped) == (tmp_path / "b", ["2.png"], [])
    with pytest.raises(InputError, match="not an image file"):
        scan_image_files(tmp_path / "a" / "notes.txt")
    with pytest.raises(InputError, match="not found"):
        scan_image_files(tmp_path / "nowhere")


def test_class_folders_follow_keras_order(tmp_path):
    import keras

    make_tree(tmp_path, ["dog/1.png", "Cat/2.png", "ant/3.png", "ant/deep/4.png"])
    folder = ImageFolder(tmp_path, image_shape=(4, 4, 1), num_classes=3)
    keras_names = keras.utils.image_dataset_from_directory(
        tmp_path, image_size=(4, 4), batch_size=1, color_mode="grayscale", shuffle=False
    ).class_names
    assert folder.label_source == "class folders"
    assert {e.relative: e.label for e in folder.entries} == {
        relative: keras_names.index(relative.split("/")[0])
        for relative in ["Cat/2.png", "ant/3.png", "ant/deep/4.png", "dog/1.png"]
    }


def test_class_folders_must_match_the_model_or_use_names(tmp_path):
    make_tree(tmp_path, ["7/a.png", "3/b.png"])
    with pytest.raises(InputError, match="2 class subfolders but the model has 10 classes"):
        ImageFolder(tmp_path, image_shape=(4, 4, 1), num_classes=10)
    names = tmp_path.parent / "names.txt"
    names.write_text("\n".join(str(d) for d in range(10)) + "\n")
    folder = ImageFolder(tmp_path, image_shape=(4, 4, 1), num_classes=10, class_names=names)
    assert [(e.relative, e.label) for e in folder.entries] == [("3/b.png", 3), ("7/a.png", 7)]
    unlabelled = ImageFolder(tmp_path, image_shape=(4, 4, 1), num_classes=10, folder_labels=False)
    assert unlabelled.label_source == "none" and unlabelled.entries[0].label is None


def test_labels_csv_by_index_and_name(tmp_path):
    make_tree(tmp_path, ["a.png", "sub/b.png", "c.png"])
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n./a.png,1\nsub\\b.png,cat\nmissing.png,0\n")
    assert read_class_names(names) == ["cat", "dog"]
    assert read_labels_csv(labels, ["cat", "dog"]) == {"a.png": 1, "sub/b.png": 0, "missing.png": 0}
    folder = ImageFolder(
        tmp_path, image_shape=(4, 4, 1), labels=labels, class_names=names, num_classes=2
    )
    assert folder.label_source == "labels file"
    assert [(e.relative, e.label) for e in folder.entries] == [("a.png", 1), ("sub/b.png", 0)]
    assert [(s.relative, s.reason) for s in folder.skipped] == [("c.png", "no label in labels.csv")]
    with pytest.raises(InputError, match=r"c\.png: no label in labels\.csv"):
        ImageFolder(tmp_path, image_shape=(4, 4, 1), labels=labels, class_names=names, strict=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,cat\n", "class name, but no class names"),
        ("a.png,1\na.png,0\n", "two different labels"),
        ("a.png\n", "expected 'relative path,label'"),
        ("a.png,7\n", r"class indices in \[7, 7\] but the model has 2"),
    ],
)
def test_bad_labels_csv_is_refused(tmp_path, text, message):
    make_tree(tmp_path, ["a.png"])
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(InputError, match=message):
        ImageFolder(tmp_path, image_shape=(4, 4, 1), labels=tmp_path / "labels.csv", num_classes=2)


def test_folder_batches_are_bounded_and_skip_unreadable_files(tmp_path):
    make_tree(tmp_path, [f"{i:02d}.png" for i in range(7)])
    (tmp_path / "03.png").write_bytes(b"\x89PNG broken")
    folder = ImageFolder(tmp_path, image_shape=(4, 4, 1))
    batches = folder.batches(3)
    first = next(batches)
    assert first.codes.shape == (3, 4, 4, 1) and first.labels is None
    second = next(batches)
    assert [e.relative for e in second.entries] == ["04.png", "05.png"]
    assert second.skipped[0].relative == "03.png" and "cannot" in second.skipped[0].reason
    assert np.array_equal(second.pixels(), second.codes.astype(np.float32) / 255)
    assert len(list(batches)) == 1
    with pytest.raises(ImageReadError, match=r"03\.png"):
        ImageFolder(tmp_path, image_shape=(4, 4, 1), strict=True).check_sizes()


def test_check_sizes_refuses_mismatches_early(tmp_path):
    make_tree(tmp_path, ["a.png"])
    Image.fromarray(rgb(5, 5)).save(tmp_path / "b.png")
    with pytest.raises(
        InputError, match=r"1 images do not match the model's 4x4 input \(e.g. b.png is 5x5\)"
    ):
        ImageFolder(tmp_path, image_shape=(4, 4, 1)).check_sizes()
    ImageFolder(tmp_path, image_shape=(4, 4, 1), resize="bilinear").check_sizes()


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"No images to read.*1 other files were skipped"):
        ImageFolder(tmp_path, image_shape=(4, 4, 1))


def test_load_mnist_checks_headers_and_lengths(tmp_path):
    def idx(path, magic, shape, data):
        header = np.array([magic, *shape], dtype=">u4").tobytes()
        with gzip.open(path, "wb") as stream:
            stream.write(header + bytes(data))

    idx(tmp_path / "t10k-images-idx3-ubyte.gz", 2051, (2, 2, 2), range(8))
    idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (2,), [3, 9])
    images, labels = load_mnist(tmp_path)
    assert images.tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]] and labels.tolist() == [3, 9]
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    with pytest.raises(InputError, match="MNIST folder not found"):
        load_mnist(tmp_path / "missing")
    idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, (3,), [3, 9])
    with pytest.raises(InputError, match="truncated"):
        load_mnist(tmp_path)
    idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2051, (2,), [3, 9])
    with pytest.raises(InputError, match="not an MNIST idx file"):
        load_mnist(tmp_path)
    with pytest.raises(InputError, match="no train-images"):
        load_mnist(tmp_path, split="train")
