"""Write failures: an OSError that names no file (a full disk) is given the file being written,
no temporary file is left, the journal rewrite after an interruption is one atomic step."""

import errno
import os

import pytest

from robustkit.io import RunJournal, atomic_write
from robustkit.io.files import TEMP_SUFFIX


def test_a_failed_write_names_its_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "sub" / "a.png"
    with pytest.raises(OSError) as caught, atomic_write(target) as stream:
        stream.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(target))
    assert str(caught.value) == f"[Errno 28] No space left on device: '{target}'"
    assert os.listdir(tmp_path / "sub") == []


def test_an_error_naming_its_own_file_is_kept(tmp_path):
    other = OSError(errno.EACCES, "Permission denied", "/elsewhere")
    with pytest.raises(PermissionError) as caught, atomic_write(tmp_path / "a.json", "w"):
        raise other
    assert caught.value is other and not list(tmp_path.glob(f".*{TEMP_SUFFIX}"))


def test_recover_rewrites_the_journal_in_one_step(tmp_path, monkeypatch):
    journal = RunJournal(tmp_path / "j.jsonl")
    journal.start({"eps": 0.3}, [{"path": "a.png"}])
    journal.append([{"path": "b.png"}])
    journal.path.write_text(journal.path.read_text() + '{"path": "c.p')
    monkeypatch.setattr(RunJournal, "append", lambda self, rows: pytest.fail("not atomic"))
    assert journal.recover() == ({"eps": 0.3}, [{"path": "a.png"}, {"path": "b.png"}])
    assert journal.path.read_text() == (
        '{"header": {"eps": 0.3}}\n{"path": "a.png"}\n{"path": "b.png"}\n'
    )
