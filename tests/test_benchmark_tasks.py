"""Every built-in benchmark task loads the real files under the shared data folder.

Counts are the official ones from the data README / SOURCE.txt files; carved splits
must be disjoint, fixed and cover the file they are carved from. IMDB is left out
(reading its archive is slow and it is tested with sentiment.py).
"""

from __future__ import annotations

import functools
import re
import shutil

import pytest

import softprompt.tasks  # noqa: F401  (registers the built-in tasks)
from softprompt.errors import DataError
from softprompt.tasks.base import Example, get_task, task_names
from softprompt.tasks.metrics import METRICS
from softprompt.tasks.readers import data_root

OFFICIAL = {
    ("sst2", "train"): 67_349,
    ("sst2", "dev"): 872,
    ("mrpc", "train"): 3_668,
    ("mrpc", "dev"): 408,
    ("mrpc", "test"): 1_725,
    ("rte_glue", "train"): 2_490,
    ("rte_glue", "dev"): 277,
    ("cola", "train"): 8_551,
    ("cola", "dev"): 1_043,
    ("stsb", "train"): 5_749,
    ("stsb", "dev"): 1_500,
    ("wnli", "train"): 635,
    ("wnli", "dev"): 71,
    ("glue_diagnostic", "dev"): 1_104,
    ("boolq", "train"): 32,
    ("boolq", "dev"): 3_270,
    ("cb", "train"): 250,
    ("cb", "dev"): 56,
    ("rte", "train"): 2_490,
    ("rte", "dev"): 277,
    ("wsc", "train"): 554,
    ("wsc", "dev"): 104,
    ("multirc", "train"): 27_243,
    ("multirc", "dev"): 4_848,  # answer options
    ("record", "train"): 32,
    ("record", "dev"): 32,
    ("axb", "dev"): 1_104,
    ("axg", "dev"): 356,
    ("anli_r1", "dev"): 1_000,
    ("anli_r2", "dev"): 1_000,
    ("anli_r3", "dev"): 1_200,
}
# Task -> (examples in the file carved from, key that must not cross the split).
CARVED = {
    "qnli": (5_463, lambda e: e.fields["question"]),
    "mnli": (9_815, lambda e: e.fields["premise"]),
    "snli": (9_842, lambda e: e.fields["premise"]),
    "squad": (10_570, lambda e: e.fields["context"]),
    "mrqa_squad": (10_507, lambda e: e.fields["context"]),
}
TASKS = sorted(set(task_names()) - {"imdb"})


@pytest.fixture(scope="module", autouse=True)
def _data():
    try:
        root = data_root()
    except DataError:
        pytest.skip("benchmark data folder not found")
    if not root.is_dir():
        pytest.skip(f"benchmark data folder {root} is absent")


@functools.cache
def _load(name: str, split: str) -> tuple[Example, ...]:
    return tuple(get_task(name).load(split))


def test_every_task_is_registered():
    expected = {
        "mrpc",
        "rte_glue",
        "cola",
        "stsb",
        "qnli",
        "wnli",
        "mnli",
        "snli",
        "glue_diagnostic",
        "boolq",
        "cb",
        "rte",
        "wsc",
        "multirc",
        "record",
        "axb",
        "axg",
        "anli_r1",
        "anli_r2",
        "anli_r3",
        "squad",
        "mrqa_squad",
    }
    assert expected <= set(task_names())
    assert set(TASKS) == {name for name, _ in OFFICIAL} | set(CARVED)


@pytest.mark.parametrize(("name", "split"), sorted(OFFICIAL))
def test_official_split_sizes(name, split):
    assert len(_load(name, split)) == OFFICIAL[name, split]


@pytest.mark.parametrize("name", sorted(CARVED))
def test_carved_splits_are_disjoint_deterministic_and_complete(name):
    total, key = CARVED[name]
    train, dev = _load(name, "train"), _load(name, "dev")
    assert len(train) + len(dev) == total
    assert 0.05 * total < len(dev) < 0.15 * total
    assert not {key(e) for e in train} & {key(e) for e in dev}
    assert not {e.source for e in train} & {e.source for e in dev}
    assert list(train) == get_task(name).load("train")  # fresh read, same order
    assert "carved" in get_task(name).description


@pytest.mark.parametrize("name", TASKS)
def test_targets_fit_the_task(name):
    task = get_task(name)
    assert set(task.metrics) <= set(METRICS)
    for split in task.splits:
        for example in _load(name, split):
            if task.is_classification:
                assert example.target in task.verbalizer, example.source
            else:
                assert example.target and example.target in example.references, example.source
            if example.choices is not None:
                assert set(example.references) <= set(example.choices), example.source


@pytest.mark.parametrize("name", TASKS)
def test_format_and_source_of_a_few_examples(name):
    task = get_task(name)
    for split in task.splits:
        for example in _load(name, split)[:3]:
            text = task.format(example)
            assert text.startswith(task.template.split("{")[0])
            assert all(example.fields[f].strip()[:20] in text for f in task.template_fields)
            assert example.source.startswith(str(data_root()))
            assert task.target_text(example)


def test_stsb_targets_are_rounded_to_a_fifth():
    first = _load("stsb", "dev")[:2]  # scores 5.000 and 4.750 in dev.tsv
    assert [e.target for e in first] == ["5.0", "4.8"]


def test_grouped_tasks_carry_their_groups():
    multirc = _load("multirc", "dev")
    assert len({e.group for e in multirc}) == 953  # questions
    axg = _load("axg", "dev")
    assert len({e.group for e in axg}) == 178  # minimal pairs
    pairs = zip(axg[::2], axg[1::2])
    assert all(a.fields["hypothesis"] == b.fields["hypothesis"] for a, b in pairs)


def test_glue_diagnostic_matches_axb():
    diagnostic, axb = _load("glue_diagnostic", "dev"), _load("axb", "dev")
    assert [(e.fields, e.target) for e in diagnostic] == [(e.fields, e.target) for e in axb]


def _corrupt(tmp_path, monkeypatch, folder: str, name: str, line: int, text: str):
    """Copy a data file into a tmp data root and replace one line (1-based) with `text`."""
    target = tmp_path / folder / name
    target.parent.mkdir(parents=True)
    shutil.copy(data_root() / folder / name, target)
    lines = target.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[line - 1] = text + "\n"
    target.write_text("".join(lines), encoding="utf-8")
    monkeypatch.setenv("SOFTPROMPT_DATA", str(tmp_path))
    return target


@pytest.mark.parametrize(
    ("task", "folder", "name", "line", "text"),
    [
        ("wnli", "WNLI", "dev.tsv", 5, "3\tonly one sentence"),
        ("cola", "CoLA", "dev.tsv", 7, "gj04\t7\t\tThe label is not 0 or 1."),
        ("cb", "CB", "val.jsonl", 4, '{"premise": "p", "hypothesis": "h", "label": "maybe"}'),
        ("rte", "RTE", "val.jsonl", 2, '{"premise": "p", "hypothesis": '),
    ],
)
def test_malformed_row_names_path_and_line(tmp_path, monkeypatch, task, folder, name, line, text):
    path = _corrupt(tmp_path, monkeypatch, folder, name, line, text)
    with pytest.raises(DataError, match="^" + re.escape(f"{path}:{line}: ")):
        get_task(task).load("dev")
