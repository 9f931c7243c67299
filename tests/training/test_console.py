"""The Ctrl-C console of elektronn-train, driven in a real pseudo-terminal."""

import fcntl
import io
import os
import signal
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import pytest

from elektronn.data.synthetic import write_cubes
from elektronn.training import console
from elektronn.training.config import EXAMPLE_CONFIG_DIR

pexpect = pytest.importorskip("pexpect")
from pexpect import fdpexpect  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

TINY = """
save_path = {save!r}
data_path = label_path = {data!r}
desired_input = [23, 23, 5]
filters = [[4, 4, 1], [3, 3, 3]]
pool = [[2, 2, 1], [1, 1, 1]]
nof_filters = [4, 6]
batch_size = 1
monitor_batch_size = 2
n_steps = 10**6
history_freq = [10]
max_runtime = 300
preview_data_path = None
plot_on = False
background_processes = {bg!r}
SGD_params = dict(LR=0.01, momentum=0.9)
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("console_data")
    write_cubes(folder, n_cubes=3, shape=(40, 40, 12))
    return folder


def write_config(tmp_path, data_dir, bg=False):
    text = (EXAMPLE_CONFIG_DIR / "neuro_3d_config.py").read_text()
    text += TINY.format(save=f"{tmp_path}/runs/", data=f"{data_dir}/", bg=bg)
    path = tmp_path / "console_config.py"
    path.write_text(text)
    return path


def child_env():
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", TERM="dumb")
    return env


# Run in the child before the training: make the pseudo-terminal on stdin the session's
# controlling terminal (so that its Ctrl-C character sends SIGINT), then become the program.
_TAKE_TERMINAL = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                  "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


class Terminal(fdpexpect.fdspawn):
    """A program on a real pseudo-terminal, driven like ``pexpect.spawn``.

    ``pexpect.spawn`` forks the test process, which has JAX's threads by now (JAX warns that
    ``os.fork()`` may deadlock); ``subprocess`` starts the child without running Python in a
    forked copy of this process.
    """

    def __init__(self, argv, cwd, env, rows=50, cols=200, **kwargs):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self._intr, self._eof = (termios.tcgetattr(slave)[6][i]
                                 for i in (termios.VINTR, termios.VEOF))
        self.proc = subprocess.Popen([sys.executable, "-c", _TAKE_TERMINAL, *argv],
                                     stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     start_new_session=True)
        os.close(slave)
        super().__init__(master, **kwargs)

    def sendintr(self):
        """Type the terminal's interrupt character (Ctrl-C)."""
        self.send(self._intr.decode())

    def sendeof(self):
        """Type the terminal's end-of-file character (Ctrl-D)."""
        self.send(self._eof.decode())

    def close(self, force=True):
        if force and self.proc.poll() is None:
            self.proc.kill()
        self.exitstatus = self.proc.wait()
        super().close()


def spawn(config, tmp_path):
    child = Terminal(["-m", "elektronn.scripts.train", str(config)], cwd=str(tmp_path),
                     env=child_env(), encoding="utf-8", timeout=240)
    child.logfile_read = io.StringIO()
    return child


def run_dir(tmp_path):
    return tmp_path / "runs"


def interrupt(child):
    child.expect(r"\d{5} NLLm=")  # a monitoring step: the training runs
    child.sendintr()  # Ctrl-C from the terminal
    child.expect("ELEKTRONN MENU")
    status = child.before
    child.expect("@ELEKTRONN: ")
    return status


def command(child, line, answer):
    child.sendline(line)
    child.expect(answer)
    child.expect("@ELEKTRONN: ")


@pytest.mark.slow
def test_console_commands_resume_and_abort(tmp_path, data_dir):
    child = spawn(write_config(tmp_path, data_dir, bg=2), tmp_path)
    try:
        status = interrupt(child)
        assert "LR=0.0" in status and "MOM=0.900000" in status
        command(child, "setlr 0.0123", r"LR = 0\.0123")
        command(child, "setmom 0.5", r"momentum = 0\.5")
        command(child, "sethist 3", "Monitoring every 3 steps")
        command(child, "save console.param", "Saving done")
        assert (run_dir(tmp_path) / "console.param").stat().st_size > 0
        command(child, "load console.param", "Loaded!")
        command(child, "load missing.param", "load failed: .*missing.param")
        command(child, "self.config.optimizer", "'SGD'")
        command(child, "answer = 6 * 7", "")
        command(child, "answer", "42")
        command(child, "self.data.warp_on = False", "")
        command(child, "self.data.warp_on", "False")
        command(child, "1 / 0", "ZeroDivisionError")  # the error is shown, the console stays
        command(child, "params", r"Layer  0 .*shape=")
        command(child, "sf", "Figures written")
        assert (run_dir(tmp_path) / "filters_layer0.png").exists()
        child.sendline("q")
        child.expect("Continuing Training")
        child.expect(r"LR=0\.01230")  # the next monitoring step trains with the new LR
        interrupt(child)
        child.sendline("abort")
        child.expect("End of Training")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130, child.logfile_read.getvalue()[-3000:]  # interrupted
    folder = run_dir(tmp_path)
    assert (folder / "neuro_3d_end.param").exists()
    history = np.load(folder / "Backup" / "neuro_3d.history.npy")
    after = history[np.isclose(history[:, 7], 0.0123)]
    assert len(after) >= 1
    assert set(np.diff(after[:, 0]).astype(int)) <= {3}  # 'sethist 3'


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "eof"])
def test_console_kill_and_end_of_input(tmp_path, data_dir, how):
    child = spawn(write_config(tmp_path, data_dir), tmp_path)
    try:
        interrupt(child)
        if how == "kill":
            child.sendline("kill")
            child.expect("not saving")
        else:
            child.sendeof()
            child.expect("End of input")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130  # interrupted
    assert (run_dir(tmp_path) / "neuro_3d_end.param").exists() == (how == "eof")


@pytest.mark.slow
def test_ctrl_c_without_terminal_stops_cleanly(tmp_path, data_dir):
    config = write_config(tmp_path, data_dir)
    proc = subprocess.Popen([sys.executable, "-m", "elektronn.scripts.train", str(config)],
                            cwd=tmp_path, env=child_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if " NLLm=" in line:
                break
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 130, out  # interrupted
    assert "without a terminal" in out and "End of Training" in out
    assert (run_dir(tmp_path) / "neuro_3d_end.param").exists()


# --- the console without a training -------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self):
        return True


class _FakeTrainer:
    save_name = "fake"

    def __init__(self, tmp_path):
        self.save_path = tmp_path


def test_command_parsing(tmp_path):
    out = io.StringIO()
    con = console.Console(_FakeTrainer(tmp_path), stdin=_Tty("sethist x\nsetlr\nq\n"),
                          stdout=out)
    con.trainer.config = type("C", (), {"history_freq": [5], "optimizer": "SGD"})()
    assert con.interact() == console.RESUME
    text = out.getvalue()
    assert "expected a positive integer" in text and "wrong number of arguments" in text
    assert con.trainer.config.history_freq == [5]
    assert con.execute("") == console.RESUME and con.execute("kill") == console.KILL
    assert con.execute("Adam") is None and con.trainer.config.optimizer == "Adam"
    assert console.Console(_FakeTrainer(tmp_path), stdin=io.StringIO("q\n"),
                           stdout=out).interact() == console.ABORT  # no terminal


def test_interrupt_flag_defers_the_first_ctrl_c():
    flag = console.InterruptFlag().install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
