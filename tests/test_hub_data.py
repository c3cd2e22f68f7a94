"""Data from Hugging Face `datasets`, offline: built-in tasks falling back to the hub (the
one-line error naming the three sources; hub rows written into the local file layout and
read by the same loaders), and user tasks over Parquet, saved Arrow folders, hub names,
`Dataset` objects and lists of dicts. Nothing here touches the network: `load_dataset` is
replaced in every test that could reach it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

import softprompt.tasks  # noqa: E402,F401  (registers the built-in tasks)
from helpers import write_csv  # noqa: E402
from softprompt.errors import DataError  # noqa: E402
from softprompt.tasks import hub, readers  # noqa: E402
from softprompt.tasks.base import get_task  # noqa: E402
from softprompt.tasks.user import user_task  # noqa: E402

ROWS = [("a great movie", "1"), ("an awful movie", "0"), ("great", "1")]
DICTS = [{"sentence": s, "label": int(label)} for s, label in ROWS]
VERBALIZER = {"0": "negative", "1": "positive"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """A fresh hub cache, and `load_dataset` failing the way it does without a network."""
    calls = []

    def unreachable(path, name=None, **kwargs):
        calls.append((path, name, kwargs.get("split")))
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    return calls


@pytest.fixture
def hub_rows(monkeypatch):
    """Serve `load_dataset(path, config, split=...)` from a dict {(path, config, split): rows}."""
    served = HubRows()
    calls = served.calls

    def load(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if split is None:
            return datasets.DatasetDict(
                {s: datasets.Dataset.from_list(r) for (p, c, s), r in served.items() if (p, c) == (path, name)}
            )
        return datasets.Dataset.from_list(served[path, name, split])

    monkeypatch.setattr(datasets, "load_dataset", load)
    return served


class HubRows(dict):
    """{(path, config, split): rows} served by the fake hub, and the `calls` it received."""

    def __init__(self):
        super().__init__()
        self.calls: list = []


def no_local_data(monkeypatch, tmp_path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SOFTPROMPT_DATA", str(empty))
    return empty


# -- built-in tasks: the error when no source has the data -------------------------------------


def test_builtin_task_without_any_source_names_all_three_in_one_line(monkeypatch, tmp_path, no_network):
    empty = no_local_data(monkeypatch, tmp_path)
    with pytest.raises(DataError) as err:
        get_task("cb").load("train")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("benchmark file CB/train.jsonl not found in any data source: ")
    assert f"$SOFTPROMPT_DATA={empty} has no CB/train.jsonl" in msg
    assert "../shared/data" in msg and "Hugging Face hub" in msg and "aps/super_glue (cb)" in msg
    assert "ConnectionError" in msg
    assert no_network == [("aps/super_glue", "cb", "train")]


def test_error_when_the_shared_folder_search_finds_nothing(monkeypatch, no_network):
    monkeypatch.delenv("SOFTPROMPT_DATA", raising=False)
    monkeypatch.setattr(readers, "local_root", lambda: None)
    with pytest.raises(
        DataError,
        match=r"1\) \$SOFTPROMPT_DATA is not set; 2\) no \.\./shared/data folder beside the project; 3\) Hugging Face hub: hub dataset nyu-mll/glue \(sst2\): ConnectionError",
    ):
        get_task("sst2").load("dev")
    with pytest.raises(DataError, match="data folder not found"):
        readers.data_root()


def test_a_file_with_no_hub_copy_says_so(monkeypatch, tmp_path, no_network):
    no_local_data(monkeypatch, tmp_path)
    with pytest.raises(DataError, match=r"3\) Hugging Face hub: no hub copy of BoolQ/fewglue_32/train.jsonl is mapped"):
        get_task("boolq").load("train")
    assert no_network == []


def test_without_datasets_installed_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    no_local_data(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"needs the `datasets` package: pip install 'softprompt\[data\]'"):
        get_task("rte").load("dev")


def test_offline_mode_fails_at_the_datasets_call_with_one_line(tmp_path):
    """A real `load_dataset` call with HF_DATASETS_OFFLINE=1 and an empty HF cache (own process,
    since `datasets` reads the variable at import)."""
    (tmp_path / "empty").mkdir()
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "SOFTPROMPT_DATA": str(tmp_path / "empty"),
        "SOFTPROMPT_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(readers.__file__).parents[2]),
    }
    code = "import softprompt.tasks as t\ntry:\n    t.get_task('cb').load('dev')\nexcept Exception as e:\n    print(type(e).__name__, e)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    line = done.stdout.strip()
    assert line.startswith("DataError benchmark file CB/val.jsonl not found in any data source"), (
        done.stdout + done.stderr
    )
    assert "\n" not in line and "aps/super_glue (cb)" in line and "HF offline mode is on" in line


# -- built-in tasks: hub rows written in the local layout ---------------------------------------


def test_sst2_and_cb_from_hub_rows_go_through_the_same_loaders(monkeypatch, tmp_path, hub_rows):
    no_local_data(monkeypatch, tmp_path)
    hub_rows["nyu-mll/glue", "sst2", "train"] = [
        {"sentence": "hide new secretions ", "label": 0, "idx": 0},
        {"sentence": 'he said "hi', "label": 1, "idx": 1},
    ]
    hub_rows["aps/super_glue", "cb", "validation"] = [
        {"premise": "p one", "hypothesis": "h one", "idx": 0, "label": 0},
        {"premise": "p two", "hypothesis": "h two", "idx": 1, "label": 1},
        {"premise": "p three", "hypothesis": "h three", "idx": 2, "label": 2},
    ]
    sst2 = get_task("sst2").load("train")
    cached = tmp_path / "cache" / "data" / "SST-2" / "train.tsv"
    assert [(e.fields, e.target) for e in sst2] == [
        ({"sentence": "hide new secretions"}, "negative"),
        ({"sentence": 'he said "hi'}, "positive"),
    ]
    assert sst2[0].source == f"{cached}:2"
    cb = get_task("cb").load("dev")
    assert [e.target for e in cb] == [
        "entailment",
        "contradiction",
        "neutral",
    ]  # hub order: entailment, contradiction, neutral
    assert cb[1].fields == {"premise": "p two", "hypothesis": "h two"}
    # Materialised once: the next load reads the cached file without asking the hub.
    before = len(hub_rows.calls)
    assert get_task("cb").load("dev") == cb and len(hub_rows.calls) == before


def _local(folder: str, name: str) -> Path:
    try:
        root = readers.data_root()
    except DataError:
        pytest.skip("benchmark data folder not found")
    path = root / folder / name
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _from_local(folder: str, name: str) -> list[dict]:
    """The local file's rows turned into the hub's schema (the inverse of tasks.hub's writers)."""
    path = _local(folder, name)
    if folder in ("SST-2", "STS-B"):
        rows = list(readers.read_delimited(path, "\t"))
        if folder == "SST-2":
            return [{"sentence": r["sentence"], "label": int(r["label"]), "idx": i} for i, (_, r) in enumerate(rows)]
        return [
            {"sentence1": r["sentence1"], "sentence2": r["sentence2"], "label": float(r["score"]), "idx": i}
            for i, (_, r) in enumerate(rows)
        ]
    if folder == "CoLA":
        lines = path.read_text(encoding="utf-8").splitlines()
        return [
            {"sentence": c[3], "label": int(c[1]), "idx": i} for i, c in enumerate(line.split("\t") for line in lines)
        ]
    if folder == "CB":
        names = ["entailment", "contradiction", "neutral"]
        return [
            {"premise": r["premise"], "hypothesis": r["hypothesis"], "idx": r["idx"], "label": names.index(r["label"])}
            for r in _jsonl(path)
        ]
    if folder == "WSC":
        return [{"text": r["text"], **r["target"], "idx": r["idx"], "label": int(r["label"])} for r in _jsonl(path)]
    if folder == "MultiRC":
        return [
            {
                "paragraph": r["passage"]["text"],
                "question": q["question"],
                "answer": a["text"],
                "idx": {"paragraph": r["idx"], "question": q["idx"], "answer": a.get("idx", n)},
                "label": int(a["label"]),
            }
            for r in _jsonl(path)
            for q in r["passage"]["questions"]
            for n, a in enumerate(q["answers"])
        ]
    if folder == "SQuAD":
        return [
            {
                "id": qa["id"],
                "title": art["title"],
                "context": par["context"],
                "question": qa["question"],
                "answers": {
                    "text": [a["text"] for a in qa["answers"]],
                    "answer_start": [a["answer_start"] for a in qa["answers"]],
                },
            }
            for art in json.loads(path.read_text(encoding="utf-8"))["data"]
            for par in art["paragraphs"]
            for qa in par["qas"]
        ]
    raise AssertionError(folder)


@pytest.mark.parametrize(
    ("task", "split", "folder", "name", "hub_key"),
    [
        ("sst2", "dev", "SST-2", "dev.tsv", ("nyu-mll/glue", "sst2", "validation")),
        ("cola", "dev", "CoLA", "dev.tsv", ("nyu-mll/glue", "cola", "validation")),
        ("stsb", "dev", "STS-B", "dev.tsv", ("nyu-mll/glue", "stsb", "validation")),
        ("cb", "train", "CB", "train.jsonl", ("aps/super_glue", "cb", "train")),
        ("wsc", "dev", "WSC", "val.jsonl", ("aps/super_glue", "wsc.fixed", "validation")),
        ("multirc", "dev", "MultiRC", "val.jsonl", ("aps/super_glue", "multirc", "validation")),
        ("squad", "dev", "SQuAD", "dev-v1.1.json", ("rajpurkar/squad", None, "validation")),
        ("squad", "train", "SQuAD", "dev-v1.1.json", ("rajpurkar/squad", None, "validation")),
    ],
)
def test_hub_copy_of_a_local_file_gives_the_same_examples(
    monkeypatch, tmp_path, hub_rows, task, split, folder, name, hub_key
):
    """The local file's rows, served in the hub schema, come back as the very same examples
    (fields, targets, groups, answers; carved splits included) as from the local file."""
    local = get_task(task).load(split)
    hub_rows[hub_key] = _from_local(folder, name)
    no_local_data(monkeypatch, tmp_path)
    from_hub = get_task(task).load(split)
    assert [(e.fields, e.target, e.answers, e.group) for e in from_hub] == [
        (e.fields, e.target, e.answers, e.group) for e in local
    ]
    assert from_hub[0].source.startswith(str(tmp_path / "cache" / "data" / folder))


def test_imdb_hub_rows_become_the_archive_layout(monkeypatch, tmp_path, hub_rows):
    no_local_data(monkeypatch, tmp_path)
    hub_rows["stanfordnlp/imdb", None, "train"] = [
        {"text": "Great.<br />Loved it", "label": 1},
        {"text": "Dull", "label": 0},
    ]
    hub_rows["stanfordnlp/imdb", None, "test"] = [{"text": "Fine", "label": 1}]
    train = get_task("imdb").load("train")
    assert sorted((e.fields["sentence"], e.target) for e in train) == [
        ("Dull", "negative"),
        ("Great. Loved it", "positive"),
    ]
    assert [(e.fields["sentence"], e.target) for e in get_task("imdb").load("dev")] == [("Fine", "positive")]


def test_unlabelled_hub_rows_are_refused_where_the_task_needs_labels(monkeypatch, tmp_path, hub_rows):
    no_local_data(monkeypatch, tmp_path)
    hub_rows["aps/super_glue", "axb", "test"] = [{"sentence1": "a", "sentence2": "b", "idx": 0, "label": -1}]
    with pytest.raises(DataError, match=r"rows do not have the expected schema .*unlabelled rows \(label -1\)") as err:
        get_task("axb").load("dev")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache" / "data" / "AX-b" / "AX-b.jsonl").exists()


def test_every_mapped_file_is_one_a_task_reads():
    assert {
        "SST-2/train.tsv",
        "CB/train.jsonl",
        "SQuAD/dev-v1.1.json",
        "IMDB/aclImdb.tar.gz",
        "MultiRC/train.jsonl",
    } <= set(hub.HUB_FILES)
    for name, spec in hub.HUB_FILES.items():
        assert spec.dataset in {
            "nyu-mll/glue",
            "aps/super_glue",
            "rajpurkar/squad",
            "stanfordnlp/imdb",
            "stanfordnlp/snli",
            "facebook/anli",
        }, name


# -- user tasks over datasets sources ------------------------------------------------------------


def make(source, split="train"):
    return user_task("reviews", {split: source}, ["sentence"], "label", VERBALIZER)


def _same_as_csv(tmp_path, examples):
    csv_examples = make(write_csv(tmp_path / "train.csv", ROWS)).load("train")
    assert [(e.fields, e.target) for e in examples] == [(e.fields, e.target) for e in csv_examples]


def test_parquet_file(tmp_path):
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_list(DICTS).to_parquet(str(path))
    examples = make(path).load("train")
    _same_as_csv(tmp_path, examples)
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:2", f"{path}:3"]
    assert list(readers.read_rows(path))[0] == (1, DICTS[0])


def test_save_to_disk_folders(tmp_path):
    single = tmp_path / "single"
    datasets.Dataset.from_list(DICTS).save_to_disk(str(single))
    _same_as_csv(tmp_path, make(single).load("train"))
    both = tmp_path / "both"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(DICTS), "validation": datasets.Dataset.from_list(DICTS[:1])}
    ).save_to_disk(str(both))
    task = user_task("reviews", {"train": both, "dev": both}, ["sentence"], "label", VERBALIZER)
    _same_as_csv(tmp_path, task.load("train"))
    (dev,) = task.load("dev")  # dev -> the "validation" split
    assert dev.source == f"{both}[validation]:1" and dev.target == "1"


def test_dataset_object_and_list_of_dicts_from_python(tmp_path):
    _same_as_csv(tmp_path, make(datasets.Dataset.from_list(DICTS)).load("train"))
    examples = make(DICTS).load("train")
    _same_as_csv(tmp_path, examples)
    assert examples[2].source == "rows[train]:3"
    task = user_task(
        "reviews",
        {"train": DICTS, "dev": datasets.DatasetDict({"validation": datasets.Dataset.from_list(DICTS)})},
        ["sentence"],
        "label",
        VERBALIZER,
    )
    assert task.load("dev")[0].source == "dataset[validation]:1"
    assert "a list of 3 rows" in task.description


def test_bad_rows_in_memory_name_the_row(tmp_path):
    with pytest.raises(DataError, match=r"^rows\[train\]:2: label '7' is not one of"):
        make([DICTS[0], {"sentence": "x", "label": 7}]).load("train")
    with pytest.raises(DataError, match=r"^rows\[train\]:1: expected a row as a dict"):
        make(["just text"]).load("train")


def test_hub_name_for_a_user_task(hub_rows):
    hub_rows["someone/reviews", None, "train"] = DICTS
    hub_rows["someone/reviews", None, "validation"] = DICTS[:2]
    task = user_task(
        "reviews",
        {"train": "someone/reviews", "dev": Path("someone/reviews:validation")},
        ["sentence"],
        "label",
        VERBALIZER,
    )
    train = task.load("train")
    assert [e.target for e in train] == ["1", "0", "1"] and train[0].source == "someone/reviews[train]:1"
    assert [e.source for e in task.load("dev")] == ["someone/reviews[validation]:1", "someone/reviews[validation]:2"]


def test_hub_name_offline_is_one_line(no_network):
    with pytest.raises(DataError) as err:
        make("imdb").load("train")
    msg = str(err.value)
    assert (
        msg.startswith("imdb: no such local file or folder, and as a hub dataset: ConnectionError") and "\n" not in msg
    )
    assert no_network == [("imdb", None, None)]


def test_a_missing_file_is_not_taken_for_a_hub_name(tmp_path, no_network):
    for missing in (tmp_path / "sst2_train.parquet", "sst2_train.parquet", "data/train.csv"):
        with pytest.raises(DataError, match="file not found"):
            make(missing).load("train")
    assert no_network == []
