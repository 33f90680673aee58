"""The shared command-line helpers: number parsing, progress bars, TensorFlow's start-up."""

import io
import logging

import click
import pytest
import tensorflow as tf

from robustkit_cli.common import NUMBER, NUMBERS, Console
from robustkit_cli.main import start_tensorflow


@pytest.mark.parametrize(
    ("text", "value"), [("8/255", 8 / 255), ("0.3", 0.3), ("1e-2", 0.01), (" 2/4 ", 0.5)]
)
def test_number_accepts_decimals_and_fractions(text, value):
    assert NUMBER.convert(text, None, None) == value


@pytest.mark.parametrize("text", ["8/0", "eps", "", "1/2/3"])
def test_number_refuses_garbage(text):
    with pytest.raises(click.BadParameter, match="is not a number"):
        NUMBER.convert(text, None, None)


def test_numbers_are_comma_separated():
    assert NUMBERS.convert("0.485, 0.456,1/2", None, None) == (0.485, 0.456, 0.5)
    with pytest.raises(click.BadParameter):
        NUMBERS.convert("0.1,,0.2", None, None)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_draws_on_a_terminal_only(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with Console().progress(10, "attacking") as advance:
        advance(4)
        advance(6)
    assert "attacking" in terminal.getvalue() and "100%" in terminal.getvalue()
    quiet = Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    with Console(quiet=True).progress(10, "attacking") as advance:
        advance(10)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    ("argv", "level"), [(["robustkit"], logging.ERROR), (["robustkit", "--debug"], logging.WARNING)]
)
def test_tensorflow_python_warnings_are_hidden_unless_debug(monkeypatch, argv, level):
    logger = tf.get_logger()
    monkeypatch.setattr(logger, "level", logging.WARNING)  # restored after the test
    monkeypatch.setattr("sys.argv", argv)
    start_tensorflow()
    assert logger.level == level
