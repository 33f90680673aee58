"""Hostile model files: a .keras whose config names a Lambda, a custom class or a class of an
arbitrary module, an .h5 with custom objects, truncated and damaged archives, a zip that is not a
model. Each is one error line naming the fix (exit code 2); Keras imports no module a config
names, and only --unsafe-load runs a file's code."""

import json
import zipfile
from pathlib import Path

import keras
import pytest
from cli_helpers import class_tree, invoke

from robustkit.errors import ModelLoadError, NotAModelError, UnsafeModelError
from robustkit.model_files import load_keras_model

FAST = ("--steps", "2", "--eps", "8/255")
RESAVE = "re-save it with model.save('model.keras')."
CUSTOM = (
    "not a class Keras ships, so it cannot be loaded from the file (unsafe loading does not "
    "help): load it in Python with keras.models.load_model(path, custom_objects=...) and pass "
    "the model to robustkit, or re-save it with built-in layers only."
)


def custom_model() -> keras.Model:
    """A model with a custom layer, registered only while it is built and saved (so loading it
    later meets a class Keras does not know, as in a fresh process)."""

    @keras.saving.register_keras_serializable(package="hostile")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2.0 * x

    return keras.Sequential([keras.Input((8, 8, 1)), Twice(), keras.layers.Flatten()])


def plain() -> keras.Model:
    return keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3, name="head")]
    )


def with_config(source: Path, target: Path, edit) -> Path:
    """A copy of the .keras archive ``source`` whose config.json is edit(config)."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config["config"]["layers"][1])
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def names_class(module, class_name):
    def edit(layer):
        layer.update(module=module, class_name=class_name, registered_name=None)

    return edit


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (path, exact error message)."""
    root = tmp_path_factory.mktemp("hostile_models")
    plain().save(root / "plain.keras")
    plain().save(root / "plain.h5")
    custom = custom_model()
    custom.save(root / "custom.keras")
    custom.save(root / "custom.h5")
    keras.saving.get_custom_objects().pop("hostile>Twice")
    archive = (root / "plain.keras").read_bytes()
    (root / "truncated.keras").write_bytes(archive[: len(archive) // 2])
    (root / "truncated.h5").write_bytes((root / "plain.h5").read_bytes()[:3000])
    with zipfile.ZipFile(root / "notes.keras", "w") as notes:
        notes.writestr("notes.txt", "not a model")
    with zipfile.ZipFile(root / "zipped.h5", "w") as notes:
        notes.writestr("notes.txt", "not a model")
    with_config(root / "plain.keras", root / "module.keras", names_class("os", "system"))
    with_config(root / "plain.keras", root / "unknown.keras", names_class(None, "Mystery"))
    members = {n: zipfile.ZipFile(root / "plain.keras").read(n) for n in ("metadata.json",)}
    with zipfile.ZipFile(root / "badjson.keras", "w") as bad:
        bad.writestr("config.json", "{not json")
        bad.writestr("metadata.json", members["metadata.json"])

    def path(name):
        return str(root / name)

    return {
        "custom.keras": f"{path('custom.keras')!r} uses 'hostile>Twice', {CUSTOM}",
        "custom.h5": f"{path('custom.h5')!r} uses 'hostile>Twice', {CUSTOM}",
        "module.keras": f"{path('module.keras')!r} uses 'os.system', {CUSTOM}",
        "unknown.keras": f"{path('unknown.keras')!r} uses 'Mystery', {CUSTOM}",
        "truncated.keras": f"{path('truncated.keras')!r} is not a Keras model archive (not a "
        f"readable .keras zip: truncated or another kind of file); copy it again or {RESAVE}",
        "truncated.h5": f"{path('truncated.h5')!r} is not a Keras model file or is damaged "
        "(truncated file: eof = 3000, sblock->base_addr = 0, stored_eof = "
        f"{(root / 'plain.h5').stat().st_size}); copy it again or {RESAVE}",
        "notes.keras": f"{path('notes.keras')!r} is a zip archive but not a Keras model (it has "
        "no config.json); give a file written by model.save('model.keras').",
        "zipped.h5": f"{path('zipped.h5')!r} is not a Keras model file or is damaged (file "
        f"signature not found); copy it again or {RESAVE}",
        "badjson.keras": f"{path('badjson.keras')!r} is a damaged Keras model archive (its "
        "config.json is not valid JSON: Expecting property name enclosed in double quotes: "
        f"line 1 column 2 (char 1)); copy it again or {RESAVE}",
    }, root


@pytest.mark.parametrize(
    "name",
    [
        "custom.keras",
        "custom.h5",
        "module.keras",
        "unknown.keras",
        "truncated.keras",
        "truncated.h5",
        "notes.keras",
        "zipped.h5",
        "badjson.keras",
    ],
)
def test_each_hostile_file_is_one_line_naming_the_fix(files, name):
    messages, root = files
    custom = name.split(".")[0] in ("custom", "module", "unknown")
    kind = ModelLoadError if custom else NotAModelError
    with pytest.raises(kind) as caught:
        load_keras_model(root / name)
    assert str(caught.value) == messages[name]
    with pytest.raises(ModelLoadError) as unsafe:  # unsafe loading changes none of them
        load_keras_model(root / name, safe_mode=False)
    assert str(unsafe.value) == messages[name]


def test_the_command_refuses_them_with_exit_code_2(files, tmp_path):
    messages, root = files
    class_tree(tmp_path / "in")
    for name in ("custom.h5", "truncated.keras", "notes.keras"):
        result = invoke(root / name, tmp_path / "in", *FAST, "--out", tmp_path / name)
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines() == [f"error: {messages[name]}"]
        assert not (tmp_path / name).exists()


def test_no_module_a_config_names_is_imported(tmp_path, monkeypatch):
    """A config naming a class of a module on the path: Keras must not import it."""
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plain().save(tmp_path / "plain.keras")
    planted = with_config(
        tmp_path / "plain.keras", tmp_path / "planted.keras", names_class("planted", "Layer")
    )
    for safe_mode in (True, False):
        with pytest.raises(ModelLoadError, match=r"uses 'planted\.Layer', not a class Keras ships"):
            load_keras_model(planted, safe_mode=safe_mode)
    assert not marker.exists()


def test_only_unsafe_load_runs_a_lambda(tmp_path):
    marker = tmp_path / "ran"
    code = eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t * 2.0)[1]")
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Lambda(code),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    model.save(tmp_path / "lambda.keras")
    marker.unlink()  # saving traced the function once
    class_tree(tmp_path / "in")
    refused = invoke(tmp_path / "lambda.keras", tmp_path / "in", *FAST, "--out", tmp_path / "o")
    assert refused.exit_code == 2 and not marker.exists()
    assert refused.stderr.strip().splitlines() == [
        f"error: {str(tmp_path / 'lambda.keras')!r} contains code (e.g. a Lambda layer) that "
        "Keras will only load with safe mode off. Only do that for a file you trust: pass "
        "safe_mode=False (CLI: --unsafe-load)."
    ]
    with pytest.raises(UnsafeModelError):
        load_keras_model(tmp_path / "lambda.keras")
    assert not marker.exists()
    allowed = invoke(
        tmp_path / "lambda.keras", tmp_path / "in", *FAST, "--out", tmp_path / "o", "--unsafe-load"
    )
    assert allowed.exit_code == 0, allowed.output
    assert marker.exists()
