"""Command-line details: the version flag; files it writes are readable as ordinary files."""

from __future__ import annotations

import os

import pytest

import scnapse as sn
from scnapse.cli import main


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and sn.__version__ in capsys.readouterr().out


def test_checkpoints_get_the_usual_file_mode(tmp_path):
    from scnapse.train import Checkpoint

    umask = os.umask(0o022)
    try:
        path = Checkpoint(tmp_path / "ckpt").save({"epoch": 1})
    finally:
        os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o644
