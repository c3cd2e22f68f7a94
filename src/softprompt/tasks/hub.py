"""Built-in task files from the Hugging Face hub, for machines without the local data folder.

`HUB_FILES` maps a built-in task's data file (its path under the data folder, e.g.
"CB/train.jsonl") to the hub dataset, config and split(s) holding the same rows, and to a
writer that writes those rows in the local file's format. `fetch` writes the file once
into `$SOFTPROMPT_CACHE/data` (default ~/.cache/softprompt/data) under the same relative
path, so every task loader, split and carving rule reads it with the same code as the
local copy and the numbers stay comparable. `readers.data_file` calls `fetch` only when no
local copy exists; nothing is downloaded otherwise.

Schemas (field names, ClassLabel order) follow the datasets' published features: GLUE and
SuperGLUE as listed in their dataset cards; SQuAD, IMDB, SNLI and ANLI from their cards as
recalled, not re-checked offline here (see the comments at those entries).

Not mapped, because the hub has no identical copy: BoolQ/fewglue_32 (FewGLUE's 32-example
train), ReCoRD/fewglue_32, MRPC's msr_paraphrase_test.txt (labelled test) and MRQA.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from softprompt.errors import DataError

Rows = Iterable[Mapping]
Writer = Callable[[Mapping[str, Rows], Path], None]  # {hub split: rows} -> write the file at path

GLUE, SUPERGLUE = "nyu-mll/glue", "aps/super_glue"
NLI_NAMES = ("entailment", "neutral", "contradiction")  # GLUE MNLI, SNLI, ANLI ClassLabel order
ENTAIL_NAMES = ("entailment", "not_entailment")  # GLUE QNLI/RTE, SuperGLUE RTE/AX-b/AX-g


def cache_data_dir() -> Path:
    """Where hub copies are written: `$SOFTPROMPT_CACHE/data`, default ~/.cache/softprompt/data."""
    return Path(os.environ.get("SOFTPROMPT_CACHE") or Path.home() / ".cache" / "softprompt") / "data"


@dataclass(frozen=True)
class HubFile:
    """Where one local data file's rows live on the hub, and how to write them locally."""

    dataset: str
    config: str | None
    splits: tuple[str, ...]
    write: Writer

    def describe(self) -> str:
        return f"{self.dataset}" + (f" {self.config}" if self.config else "") + f" [{', '.join(self.splits)}]"


# -- row helpers ------------------------------------------------------------------------------


def _only(parts: Mapping[str, Rows]) -> Rows:
    (rows,) = parts.values()
    return rows


def _label(row: Mapping, names: Sequence[str] | None = None, skip_unlabelled: bool = False):
    """The row's label as its ClassLabel name (or the raw int when `names` is None).

    -1 marks an unlabelled row on the hub: skipped where the local file drops them (SNLI),
    an error elsewhere (the hub copy is not the labelled file the task needs).
    """
    value = row["label"]
    if value == -1:
        if skip_unlabelled:
            return None
        raise DataError(
            f"the hub copy has unlabelled rows (label -1) where the task needs labels (idx {row.get('idx')})"
        )
    return names[value] if names is not None else value


def _cell(value: object) -> str:
    """A field for an unquoted GLUE TSV: tabs and newlines become spaces (the originals have none)."""
    return " ".join(str(value).replace("\t", " ").splitlines())


def _write_text(path: Path, lines: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for line in lines:
            handle.write(line + "\n")


def _tsv(header: Sequence[str] | None, columns: Callable[[Mapping], Sequence[object] | None]) -> Writer:
    """A writer of a GLUE-style TSV: optional header, then `columns(row)` (None skips the row)."""

    def write(parts: Mapping[str, Rows], path: Path) -> None:
        body = (columns(row) for row in _only(parts))
        head = ["\t".join(header)] if header else []
        _write_text(path, [*head, *("\t".join(_cell(c) for c in cells) for cells in body if cells is not None)])

    return write


def _jsonl(convert: Callable[[str, Mapping], Mapping | None]) -> Writer:
    """A writer of JSON lines: `convert(hub split, row)` per row, None skips it."""

    def write(parts: Mapping[str, Rows], path: Path) -> None:
        objects = (convert(split, row) for split, rows in parts.items() for row in rows)
        _write_text(path, (json.dumps(o, ensure_ascii=False) for o in objects if o is not None))

    return write


# -- the formats of the local files --------------------------------------------------------------


def _superglue_pair(first: str, second: str, names: Sequence[str]) -> Writer:
    return _jsonl(lambda _, r: {first: r[first], second: r[second], "label": _label(r, names), "idx": r["idx"]})


def _nli_jsonl(skip_unlabelled: bool, tag: Callable[[str], str] | None = None) -> Writer:
    def convert(split: str, row: Mapping) -> Mapping | None:
        label = _label(row, NLI_NAMES, skip_unlabelled)
        if label is None:
            return None
        obj = {"premise": row["premise"], "hypothesis": row["hypothesis"], "label": label}
        return {**obj, "tag": tag(split)} if tag else obj

    return _jsonl(convert)


def _boolq(_: str, row: Mapping) -> Mapping:
    return {"question": row["question"], "passage": row["passage"], "idx": row["idx"], "label": bool(_label(row))}


def _wsc(_: str, row: Mapping) -> Mapping:
    target = {k: row[k] for k in ("span1_index", "span2_index", "span1_text", "span2_text")}
    return {"text": row["text"], "target": target, "idx": row["idx"], "label": bool(_label(row))}


def _multirc(parts: Mapping[str, Rows], path: Path) -> None:
    """Hub rows are one answer option each; the local file is one passage per line with its
    questions and their answers nested, in first-seen order (what `superglue._multirc` reads)."""
    passages: dict[int, dict] = {}
    for row in _only(parts):
        idx = row["idx"]
        passage = passages.setdefault(
            idx["paragraph"], {"idx": idx["paragraph"], "passage": {"text": row["paragraph"], "questions": []}}
        )
        questions = passage["passage"]["questions"]
        if not questions or questions[-1]["idx"] != idx["question"]:
            questions.append({"question": row["question"], "idx": idx["question"], "answers": []})
        questions[-1]["answers"].append({"text": row["answer"], "idx": idx["answer"], "label": int(_label(row))})
    _write_text(path, (json.dumps(p, ensure_ascii=False) for p in passages.values()))


def _squad(parts: Mapping[str, Rows], path: Path) -> None:
    """Hub rows (id, title, context, question, answers{text, answer_start}) regrouped into the
    SQuAD v1.1 JSON (articles by title, paragraphs by context, in first-seen order)."""
    articles: dict[str, dict] = {}
    for row in _only(parts):
        article = articles.setdefault(row["title"], {"title": row["title"], "paragraphs": []})
        paragraphs = article["paragraphs"]
        if not paragraphs or paragraphs[-1]["context"] != row["context"]:
            paragraphs.append({"context": row["context"], "qas": []})
        answers = [
            {"text": t, "answer_start": s} for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"])
        ]
        paragraphs[-1]["qas"].append({"id": row["id"], "question": row["question"], "answers": answers})
    path.write_text(
        json.dumps({"version": "1.1", "data": list(articles.values())}, ensure_ascii=False), encoding="utf-8"
    )


def _imdb(parts: Mapping[str, Rows], path: Path) -> None:
    """The aclImdb tar layout `readers.read_imdb` reads: aclImdb/{train,test}/{neg,pos}/N_0.txt.

    The hub rows carry no file names or ratings, so members are numbered in hub order
    (within a split and label the order differs from the original archive's)."""
    with tarfile.open(path, "w:gz") as tar:
        for split, rows in parts.items():
            for number, row in enumerate(rows):
                data = str(row["text"]).encode("utf-8")
                info = tarfile.TarInfo(f"aclImdb/{split}/{('neg', 'pos')[_label(row)]}/{number:05d}_0.txt")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _glue(config: str, split: str, write: Writer) -> HubFile:
    return HubFile(GLUE, config, (split,), write)


def _superglue(config: str, split: str, write: Writer) -> HubFile:
    return HubFile(SUPERGLUE, config, (split,), write)


_SST2 = _tsv(("sentence", "label"), lambda r: (r["sentence"], _label(r)))
_COLA = _tsv(None, lambda r: ("hub", _label(r), "", r["sentence"]))  # headerless: source, label, star, sentence
_MRPC = _tsv(
    ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
    lambda r: (_label(r), r["idx"], r["idx"], r["sentence1"], r["sentence2"]),
)
_STSB = _tsv(
    ("index", "sentence1", "sentence2", "score"),
    lambda r: (r["idx"], r["sentence1"], r["sentence2"], f"{_label(r):.3f}"),
)
_QNLI = _tsv(
    ("index", "question", "sentence", "label"),
    lambda r: (r["idx"], r["question"], r["sentence"], _label(r, ENTAIL_NAMES)),
)
_RTE_GLUE = _tsv(
    ("index", "sentence1", "sentence2", "label"),
    lambda r: (r["idx"], r["sentence1"], r["sentence2"], _label(r, ENTAIL_NAMES)),
)
_WNLI = _tsv(
    ("index", "sentence1", "sentence2", "label"), lambda r: (r["idx"], r["sentence1"], r["sentence2"], _label(r))
)  # 0 not_entailment, 1 entailment
_AX = _tsv(
    ("index", "sentence1", "sentence2"), lambda r: (r["idx"], r["premise"], r["hypothesis"])
)  # unlabelled on the hub and locally

HUB_FILES: dict[str, HubFile] = {
    # GLUE (nyu-mll/glue)
    "SST-2/train.tsv": _glue("sst2", "train", _SST2),
    "SST-2/dev.tsv": _glue("sst2", "validation", _SST2),
    "CoLA/train.tsv": _glue("cola", "train", _COLA),
    "CoLA/dev.tsv": _glue("cola", "validation", _COLA),
    "MRPC/train.tsv": _glue("mrpc", "train", _MRPC),
    "MRPC/dev.tsv": _glue("mrpc", "validation", _MRPC),
    "STS-B/train.tsv": _glue("stsb", "train", _STSB),
    "STS-B/dev.tsv": _glue("stsb", "validation", _STSB),
    "QNLI/dev.tsv": _glue("qnli", "validation", _QNLI),  # the task carves train/dev from dev
    "RTE_GLUE/train.tsv": _glue("rte", "train", _RTE_GLUE),
    "RTE_GLUE/dev.tsv": _glue("rte", "validation", _RTE_GLUE),
    "WNLI/train.tsv": _glue("wnli", "train", _WNLI),
    "WNLI/dev.tsv": _glue("wnli", "validation", _WNLI),
    "GLUE_diagnostic/diagnostic.tsv": _glue("ax", "test", _AX),  # labels are joined from AX-b
    "MNLI/dev_matched.generative-nli.jsonl": _glue("mnli", "validation_matched", _nli_jsonl(skip_unlabelled=False)),
    # SuperGLUE (aps/super_glue)
    "CB/train.jsonl": _superglue(
        "cb", "train", _superglue_pair("premise", "hypothesis", ("entailment", "contradiction", "neutral"))
    ),
    "CB/val.jsonl": _superglue(
        "cb", "validation", _superglue_pair("premise", "hypothesis", ("entailment", "contradiction", "neutral"))
    ),
    "RTE/train.jsonl": _superglue("rte", "train", _superglue_pair("premise", "hypothesis", ENTAIL_NAMES)),
    "RTE/val.jsonl": _superglue("rte", "validation", _superglue_pair("premise", "hypothesis", ENTAIL_NAMES)),
    "BoolQ/val.jsonl": _superglue("boolq", "validation", _jsonl(_boolq)),  # train is FewGLUE's 32: not on the hub
    "WSC/train.jsonl": _superglue("wsc.fixed", "train", _jsonl(_wsc)),
    "WSC/val.jsonl": _superglue("wsc.fixed", "validation", _jsonl(_wsc)),
    "MultiRC/train.jsonl": _superglue("multirc", "train", _multirc),
    "MultiRC/val.jsonl": _superglue("multirc", "validation", _multirc),
    # AX-b/AX-g are "test" on the hub; their labels are public (checked when written: -1 is refused).
    "AX-b/AX-b.jsonl": _superglue("axb", "test", _superglue_pair("sentence1", "sentence2", ENTAIL_NAMES)),
    "AX-g/AX-g.jsonl": _superglue("axg", "test", _superglue_pair("premise", "hypothesis", ENTAIL_NAMES)),
    # Schemas below recalled from the dataset cards, not re-checked here.
    "SQuAD/dev-v1.1.json": HubFile("rajpurkar/squad", None, ("validation",), _squad),
    "IMDB/aclImdb.tar.gz": HubFile("stanfordnlp/imdb", None, ("train", "test"), _imdb),  # label 0 neg, 1 pos
    # SNLI validation has 158 rows without a gold label (-1); the local file drops them too (9,842).
    "SNLI/dev.generative-nli.jsonl": HubFile(
        "stanfordnlp/snli", None, ("validation",), _nli_jsonl(skip_unlabelled=True)
    ),
    "ANLI/test_R1R2R3.generative-nli.jsonl": HubFile(
        "facebook/anli",
        None,
        ("test_r1", "test_r2", "test_r3"),
        _nli_jsonl(False, lambda split: split.replace("test_", "") + "_test"),
    ),
}


def fetch(*parts: str) -> Path:
    """The cached hub copy of data file `parts`, written there first if it is not yet.

    Raises:
        DataError: One line, the reason only (no hub mapping, `datasets` missing, offline,
            download failed, unexpected rows); `readers.data_file` puts it in context.
    """
    name = "/".join(parts)
    target = cache_data_dir().joinpath(*parts)
    if target.is_file():
        return target
    spec = HUB_FILES.get(name)
    if spec is None:
        raise DataError(f"no hub copy of {name} is mapped (see softprompt.tasks.hub)")
    from softprompt.tasks import hfdata

    splits = hfdata.load_hub(spec.dataset, spec.config, spec.splits)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        spec.write(splits, partial)
        os.replace(partial, target)
    except (KeyError, TypeError, IndexError, ValueError, DataError) as err:
        raise DataError(
            f"{spec.describe()}: rows do not have the expected schema ({type(err).__name__}: {err})"
        ) from None
    finally:
        partial.unlink(missing_ok=True)
    return target
