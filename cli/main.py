"""The ``robustkit`` command group. Subcommands are imported only when run, so ``--help`` is
quick (TensorFlow loads with the command that needs it)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator

import click

# TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) is not for CLI users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null while TensorFlow starts: its absl start-up lines
    ignore TF_CPP_MIN_LOG_LEVEL in recent releases. Python-level errors still surface after."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def start_tensorflow() -> None:
    """Import TensorFlow and list its devices once, quietly unless ``--debug`` was given.

    Without ``--debug`` TensorFlow's Python warnings are hidden too: the evaluator compiles one
    function per attack and eps, which TensorFlow reports as "excessive retracing"."""
    quiet = "--debug" not in sys.argv
    with native_stderr_silenced() if quiet else contextlib.nullcontext():
        import tensorflow as tf

        tf.config.list_physical_devices()
    if quiet:
        tf.get_logger().setLevel("ERROR")


# name -> (module defining a click command of the same name, one-line help)
COMMANDS = {
    "attack": ("robustkit_cli.attack", "Attack a folder of images; write adversarial PNGs."),
    "saliency": ("robustkit_cli.saliency", "Draw saliency maps for a folder of images."),
    "evaluate": ("robustkit_cli.evaluate", "Measure a model's robust accuracy."),
}


class LazyGroup(click.Group):
    """A group whose commands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _) in COMMANDS.items() if importlib.util.find_spec(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        start_tensorflow()
        return getattr(importlib.import_module(COMMANDS[name][0]), name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="robustkit")
def main() -> None:
    """robustkit: adversarial robustness and saliency for TensorFlow / Keras classifiers.

    Exit codes: 0 done, 1 failure during the run, 2 usage or input error.
    """
