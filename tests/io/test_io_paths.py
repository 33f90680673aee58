"""Paths that lead out of the image folder: labels rows naming ../x or absolute paths, names with
'..', symbolic links to files or folders elsewhere, special files. Only files under the folder
itself are read; each refusal is a skip row with its reason (strict mode: an error)."""

import os

import numpy as np
import pytest
from PIL import Image

from robustkit.errors import ImageReadError, InputError
from robustkit.io import ImageFolder, scan_image_files
from robustkit.io.labels import inside_root, normalize_relative

OUTSIDE_ROW = "named in labels.csv but outside the image folder; not read"


def image(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(path)


@pytest.fixture
def tree(tmp_path):
    """images/ with good files and hostile names and links; outside/ next to it."""
    root = tmp_path / "images"
    image(root / "a.png", 1)
    image(root / "a..b.png", 2)
    image(root / "sub" / "c.png", 3)
    image(root / "..hidden.png", 4)
    image(tmp_path / "outside" / "secret.png", 5)
    image(tmp_path / "outside.png", 6)
    (root / "link_out.png").symlink_to(tmp_path / "outside.png")
    (root / "link_in.png").symlink_to(root / "a.png")
    (root / "folder_out").symlink_to(tmp_path / "outside", target_is_directory=True)
    os.mkfifo(root / "pipe.png")
    return root


def test_scan_reads_only_regular_files_under_the_folder(tree):
    root, images, skipped = scan_image_files(tree)
    assert root == tree
    assert images == ["a..b.png", "a.png", "link_in.png", "sub/c.png"]
    assert {skip.relative: skip.reason for skip in skipped} == {
        "folder_out": "symbolic link to a folder; not followed",
        "link_out.png": "symbolic link to a file outside the image folder; not read",
        "pipe.png": "not a regular file",
    }


def test_a_single_file_given_is_read_even_as_a_link(tree):
    assert scan_image_files(tree / "link_out.png") == (tree, ["link_out.png"], [])


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("./sub//c.png", "sub/c.png"),
        ("sub/../a.png", "a.png"),
        ("sub\\c.png", "sub/c.png"),
        ("../outside.png", "../outside.png"),
        ("sub/../../outside.png", "../outside.png"),
    ],
)
def test_label_paths_fold_dots_lexically(written, key):
    assert normalize_relative(written) == key


def test_inside_root_maps_absolute_paths_and_refuses_escapes(tree):
    assert inside_root(str(tree / "sub" / "c.png"), tree) == "sub/c.png"
    assert inside_root(str(tree.parent / "outside.png"), tree) is None
    assert inside_root("../outside.png", tree) is None
    assert inside_root("..", tree) is None
    assert inside_root("a..b.png", tree) == "a..b.png"


def test_labels_rows_outside_the_folder_are_skip_rows_and_never_read(tree):
    labels = tree.parent / "labels.csv"
    outside = tree.parent / "outside.png"
    labels.write_text(
        "path,label\n"
        "a.png,0\n"
        f"{tree / 'a..b.png'},1\n"
        "sub/../sub/c.png,2\n"
        "link_in.png,0\n"
        "../outside.png,1\n"
        f"{outside},2\n"
        "sub/../../outside/secret.png,0\n"
    )
    folder = ImageFolder(tree, image_shape=(4, 4, 1), labels=labels)
    assert [(e.relative, e.label) for e in folder.entries] == [
        ("a..b.png", 1),
        ("a.png", 0),
        ("link_in.png", 0),
        ("sub/c.png", 2),
    ]
    assert all(e.path.parent in (tree, tree / "sub") for e in folder.entries)
    assert {skip.relative: skip.reason for skip in folder.skipped} == {
        "../outside.png": OUTSIDE_ROW,
        str(outside): OUTSIDE_ROW,
        "../outside/secret.png": OUTSIDE_ROW,
        "folder_out": "symbolic link to a folder; not followed",
        "link_out.png": "symbolic link to a file outside the image folder; not read",
        "pipe.png": "not a regular file",
    }
    batch = folder.read_batch(folder.entries)
    assert batch.codes[:, 0, 0, 0].tolist() == [2, 1, 1, 3]


def test_strict_mode_refuses_links_out_and_outside_label_rows(tree, tmp_path):
    with pytest.raises(ImageReadError, match="folder_out: symbolic link to a folder"):
        ImageFolder(tree, image_shape=(4, 4, 1), strict=True)
    clean = tmp_path / "clean"
    image(clean / "a.png")
    labels = tmp_path / "labels.csv"
    labels.write_text("a.png,0\n../outside.png,1\n")
    with pytest.raises(InputError, match=r"\.\./outside\.png: named in labels\.csv but outside"):
        ImageFolder(clean, image_shape=(4, 4, 1), labels=labels, strict=True)


def test_two_spellings_of_one_file_must_agree(tree, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(f"a.png,0\n{tree / 'a.png'},1\n")
    with pytest.raises(InputError, match=r"a\.png has two different labels"):
        ImageFolder(tree, image_shape=(4, 4, 1), labels=labels)
