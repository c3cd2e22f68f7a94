"""The run-folder lock: one writer per folder, stale locks taken over, nothing left behind."""

import json
import os
import socket
import subprocess
import sys

import pytest

from softprompt import lock
from softprompt.config import TrainConfig
from softprompt.errors import ConfigError
from softprompt.train import train
from helpers import tiny_llama, toy_task


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # exited and reaped: no process has it (pids are not reused this fast)


def test_second_holder_is_refused_and_lock_released(tmp_path):
    with lock.hold(tmp_path / "run") as path:
        owner = json.loads(path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(ConfigError, match=rf"pid {os.getpid()} on .* is writing this folder"):
            with lock.hold(tmp_path / "run"):
                pass
        (tmp_path / "run" / "kept.txt").write_text("x")
    assert not path.exists()  # released
    assert (tmp_path / "run" / "kept.txt").exists()  # what the run wrote stays


def test_folder_made_for_the_lock_is_removed_when_left_empty(tmp_path):
    with lock.hold(tmp_path / "run"):
        pass
    assert not (tmp_path / "run").exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / lock.NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with lock.hold(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_from_another_host_is_not_guessed_about(tmp_path):
    (tmp_path / lock.NAME).write_text(json.dumps({"pid": _dead_pid(), "host": "some-other-host"}))
    with pytest.raises(ConfigError, match="on some-other-host"):
        with lock.hold(tmp_path):
            pass


def test_unreadable_lock_is_busy_while_fresh_and_stale_when_old(tmp_path):
    path = tmp_path / lock.NAME
    path.write_text("")  # a process between creating the file and writing its pid
    with pytest.raises(ConfigError, match="starting just now"):
        with lock.hold(tmp_path):
            pass
    old = path.stat().st_mtime - 2 * lock.FRESH_S
    os.utime(path, (old, old))  # left half written by a killed process
    with lock.hold(tmp_path):
        pass


def test_train_refuses_a_folder_another_process_writes(tmp_path):
    out = tmp_path / "out"
    cfg = TrainConfig(steps=2, batch_size=4, prompt_length=4, eval_every=100)
    with lock.hold(out):  # an empty folder with only a live lock: not "not empty", but busy
        with pytest.raises(ConfigError, match="is writing this folder"):
            train(tiny_llama(), toy_task(), cfg, out, progress=False)
        assert [p.name for p in out.iterdir()] == [lock.NAME]  # nothing of the refused run
    train(tiny_llama(), toy_task(), cfg, out, progress=False)
    assert (out / "best").is_dir() and not (out / lock.NAME).exists()
