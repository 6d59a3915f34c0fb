"""publish_dir (how `rankfunnel export` writes its output): a crash leaves the old folder or the new one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rankfunnel.publish import publish_dir


def make(folder: Path, tag: str, files: int = 40, size: int = 1 << 18) -> None:
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    for i in range(files):
        (folder / ("sub" if i % 2 else ".") / f"f{i}.bin").write_bytes(tag.encode() * (size // len(tag)))


def state(folder: Path) -> set[str]:
    """The tags of the files in ``folder`` ({'old'} or {'new'} when it is whole)."""
    files = sorted(p for p in folder.rglob("*.bin"))
    assert len(files) == 40, f"{len(files)} files: a partial folder"
    return {p.read_bytes()[:3].decode() for p in files}


def test_publish_replaces_and_cleans_up(tmp_path: Path) -> None:
    make(tmp_path / "new", "new")
    make(tmp_path / "out", "old")
    assert publish_dir(tmp_path / "new", tmp_path / "out") == tmp_path / "out"
    assert state(tmp_path / "out") == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]
    publish_dir(tmp_path / "new", tmp_path / "fresh" / "deeper")
    assert state(tmp_path / "fresh" / "deeper") == {"new"}


def test_kill_during_publish_leaves_the_old_or_the_new(tmp_path: Path) -> None:
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0):
        case = tmp_path / f"case{delay}"
        make(case / "new", "new")
        make(case / "out", "old")
        code = f"from rankfunnel.publish import publish_dir; publish_dir({str(case / 'new')!r}, {str(case / 'out')!r})"
        proc = subprocess.Popen([sys.executable, "-c", code])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        out = case / "out"
        if out.exists():
            got = state(out)
        else:  # killed between the two renames: the old folder is beside it, whole
            [old] = [p for p in case.iterdir() if p.name.startswith(".out.old-")]
            got = state(old)
        assert got in ({"old"}, {"new"})
