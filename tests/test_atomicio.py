"""Tests of elektronn.atomicio: atomic writes, and temporary files of killed writers."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from elektronn.atomicio import atomic_path, atomic_write, remove_stale_temps, temp_name

# A writer that is killed in the middle of an atomic write, as kill -9 or the OOM killer would.
WRITER = textwrap.dedent("""
    import sys, time
    from elektronn.atomicio import atomic_write

    def write(f):
        f.write(b"x" * 1_000_000)
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

    atomic_write(sys.argv[1], write)
""")


def test_killed_writer_leaves_old_file_and_next_write_removes_its_temp(tmp_path):
    target = tmp_path / "net-LAST.param"
    atomic_write(target, b"old")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.stdout.readline() == b"writing\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    temps = list(tmp_path.glob(f".net-LAST.param.{proc.pid}.*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size == 1_000_000  # what the crash left
    assert target.read_bytes() == b"old"
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net-LAST.param"]


def test_temps_of_running_processes_and_other_files_are_kept(tmp_path):
    mine = tmp_path / temp_name("a.param")  # this process is alive: it may be writing
    other = tmp_path / ".a.param.notapid.tmp"
    for p in (mine, other):
        p.write_bytes(b"")
    assert remove_stale_temps(tmp_path) == []
    assert mine.exists() and other.exists()


def test_failed_write_leaves_target_and_no_temp(tmp_path):
    target = tmp_path / "h.txt"
    atomic_write(target, b"old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, fail)
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        open(tmp, "wb").close()
        raise KeyError("x")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.txt"]
