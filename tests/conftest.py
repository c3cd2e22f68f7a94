"""Fixtures, the suite-wide settings (offline, one thread, no skips under CI) and the CI skip rule.
Shared helpers (tiny models, tasks, data files, the CLI runner) are in helpers.py."""

from __future__ import annotations

import os

# The suite never reaches the network: hub look-ups (datasets, huggingface_hub) fail at once
# instead of retrying for ~20 s. Set before either library is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import tiny_llama, tiny_t5, toy_task  # noqa: E402

from softprompt.models.loading import LoadedModel  # noqa: E402
from softprompt.tasks.base import Task  # noqa: E402

# Under CI (CI=true) a skip is a failure: a skipped integration test (no model, no data, no
# optional package) would otherwise pass CI silently. Elsewhere skips stay skips.
CI = os.environ.get("CI", "").strip().lower() == "true"


def _fail_skip_under_ci(report) -> None:
    if CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which allows no skips: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())


# Tiny models run fastest on one thread; with two threads on a busy 2-core machine each small
# matmul can wait milliseconds for the other thread.
torch.set_num_threads(1)


@pytest.fixture
def llama() -> LoadedModel:
    return tiny_llama()


@pytest.fixture
def t5() -> LoadedModel:
    return tiny_t5()


@pytest.fixture
def task() -> Task:
    return toy_task()
