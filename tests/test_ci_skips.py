"""The suite's CI rule (conftest.py): with CI=true a skip -- a test's, a fixture's or a whole
module's `importorskip` -- fails the run; without it, it stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SAMPLE = """
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("no model here")

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert False
"""
MODULE_SKIP = 'import pytest\npytest.importorskip("no_such_package_xyz")\n\ndef test_never():\n    pass\n'


def _run(tmp_path, files: dict[str, str], ci: str | None) -> tuple[int, str]:
    """(exit code, summary line) of pytest over `files` with the suite's conftest as a plugin."""
    tmp_path.mkdir(exist_ok=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return done.returncode, done.stdout.strip().splitlines()[-1].rsplit(" in ", 1)[0]


def test_under_ci_a_skip_fails(tmp_path):
    assert _run(tmp_path / "a", {"test_sample.py": SAMPLE}, "true") == (1, "1 failed, 1 passed, 1 xfailed")
    assert _run(tmp_path / "b", {"test_module_skip.py": MODULE_SKIP}, "true") == (2, "1 error")


def test_without_ci_a_skip_is_a_skip(tmp_path):
    files = {"test_sample.py": SAMPLE, "test_module_skip.py": MODULE_SKIP}
    assert _run(tmp_path, files, None) == (0, "1 passed, 2 skipped, 1 xfailed")
    assert _run(tmp_path / "c", files, "false") == (0, "1 passed, 2 skipped, 1 xfailed")
