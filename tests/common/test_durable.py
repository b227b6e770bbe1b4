"""byoc_common.durable: a writer killed at any step leaves the old file or the new one, whole.

Each kill test runs the writer in a child process that SIGKILLs itself at one step of the recipe
(inside the write, before the file's fsync, before the rename, right after it, after the folder's
fsync), as a crash or ``kill -9`` would; the hooks that do so live here, in the child only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from byoc_common import durable

REPO = Path(__file__).resolve().parents[2]
OLD, NEW = b"old " * 50_000, b"NEW!" * 60_000

CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from byoc_common import durable

    form, step, target, data = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]).read_bytes()

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    real_fsync, real_replace = os.fsync, os.replace
    fsyncs = []

    def fsync(fd):
        fsyncs.append(fd)
        if step == "before-file-fsync" and len(fsyncs) == 1:
            die()
        real_fsync(fd)

    renames = []
    last = 2 if form == "replace_dir" else 1   # replace_dir first moves the old folder aside

    def replace(src, dst):
        renames.append(dst)
        if step == "before-rename" and len(renames) == last:
            die()
        real_replace(src, dst)
        if step == "after-rename" and len(renames) == last or step == "between-renames" and len(renames) == 1:
            die()

    os.fsync, os.replace = fsync, replace

    def write(f):
        f.write(data[: len(data) // 2])
        f.flush()
        if step == "mid-write":
            die()
        f.write(data[len(data) // 2:])

    if form == "write_with":
        durable.write_with(target, write)
    elif form == "write_to_path":
        def by_name(tmp):
            with open(tmp, "wb") as f:
                write(f)
        durable.write_to_path(target, by_name)
    else:
        staging = target.parent / ".staging"
        staging.mkdir()
        with open(staging / "file", "wb") as f:
            write(f)
        durable.replace_dir(staging, target)
    if step == "after-dir-fsync":
        die()
""")

STEPS = ["mid-write", "before-file-fsync", "before-rename", "after-rename", "after-dir-fsync"]
DONE = {"after-rename", "after-dir-fsync"}   # steps at which the new content is in place


def _kill_at(form: str, step: str, target: Path, tmp_path: Path) -> None:
    data = tmp_path / "new-content"
    data.write_bytes(NEW)
    proc = subprocess.run([sys.executable, "-c", CHILD, form, step, str(target), str(data)],
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, f"the writer was not killed at {step}: {proc.stderr}"


@pytest.mark.parametrize("form", ["write_with", "write_to_path"])
@pytest.mark.parametrize("step", STEPS)
def test_a_killed_file_writer_leaves_the_old_file_or_the_new_one_whole(tmp_path, form, step):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "checkpoint.pth"
    target.write_bytes(OLD)
    _kill_at(form, step, target, tmp_path)
    assert target.read_bytes() == (NEW if step in DONE else OLD)
    litter = [p.name for p in folder.iterdir() if p != target]
    assert all(n.startswith(".checkpoint.pth.") and n.endswith(".tmp") for n in litter), litter
    # what a crash leaves behind never gets in the next writer's way
    durable.write_bytes(target, b"next")
    assert target.read_bytes() == b"next"


@pytest.mark.parametrize("step", [*STEPS, "between-renames"])
def test_a_killed_folder_replace_leaves_the_old_folder_or_the_new_one_whole(tmp_path, step):
    """A folder cannot be renamed over a full one, so the old one first goes aside under a hidden
    name: a kill between the two renames finds no target, and the old folder whole beside it."""
    folder = tmp_path / "models"
    target = folder / "fashion"
    target.mkdir(parents=True)
    (target / "file").write_bytes(OLD)
    _kill_at("replace_dir", step, target, tmp_path)
    if step in ("between-renames", "before-rename"):
        assert not target.exists()
        aside = [p for p in folder.iterdir() if p.name.startswith(".fashion.")]
        assert len(aside) == 1 and (aside[0] / "file").read_bytes() == OLD
    else:
        assert (target / "file").read_bytes() == (NEW if step in DONE else OLD)


def test_a_failing_write_leaves_the_target_and_no_temporary_file(tmp_path):
    target = tmp_path / "state.json"
    target.write_bytes(OLD)

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        durable.write_with(target, fail)
    with pytest.raises(OSError, match="No space"):
        durable.write_to_path(target, lambda tmp: fail(open(tmp, "wb")))
    assert target.read_bytes() == OLD
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_temporary_names_are_unique_and_hidden(tmp_path):
    target = tmp_path / "model.pth"
    names = {durable.temporary_name(target) for _ in range(100)}
    assert len(names) == 100
    assert all(n.parent == tmp_path and n.name.startswith(".model.pth.") for n in names)


def test_a_target_with_the_longest_name_a_folder_allows_is_written(tmp_path):
    target = tmp_path / ("é" + "m" * 253)          # 255 bytes
    assert durable.write_bytes(target, NEW).read_bytes() == NEW
    staging = tmp_path / ".staging"
    staging.mkdir()
    (tmp_path / ("d" * 255)).mkdir()                # replaced: the old one goes aside under a temporary name
    folder = durable.replace_dir(staging, tmp_path / ("d" * 255))
    assert folder.is_dir() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_json_is_strict_and_the_file_keeps_the_umask_mode(tmp_path):
    path = durable.write_json(tmp_path / "sub" / "metrics.json", {"acc": float("nan"), "x": [1.5, float("inf")]})
    assert path.read_text() == '{\n "acc": null,\n "x": [\n  1.5,\n  null\n ]\n}\n'
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_publish_moves_a_finished_download_into_place(tmp_path):
    part = tmp_path / "data.zip.part"
    part.write_bytes(NEW)
    assert durable.publish(part, tmp_path / "data.zip").read_bytes() == NEW
    assert not part.exists()
