"""GLUE tasks (SST-2 lives in sentiment.py) and the MNLI/SNLI source tasks.

Also holds the small helpers the SuperGLUE and QA modules share: turning reader rows
into `Example`s with `file:line` errors, label maps, and carving a fixed train/dev
split out of a file that only has one labelled split here.

Verbalizers use single common words the LM can say ("yes"/"no"/"maybe"), list the
negative class first (binary F1 scores the last label), and are shared across tasks
of one kind so a prompt trained on one applies to the others unchanged.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from softprompt.errors import DataError
from softprompt.tasks.base import Example, Task, register
from softprompt.tasks.readers import data_file, read_delimited, read_jsonl, seeded_split

ENTAILMENT_VERBALIZER = {"not_entailment": "no", "entailment": "yes"}
NLI_VERBALIZER = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}
RTE_TEMPLATE = "rte sentence1: {premise} sentence2: {hypothesis}"
MNLI_TEMPLATE = "mnli hypothesis: {hypothesis} premise: {premise}"
STSB_LABELS = tuple(f"{i / 5:.1f}" for i in range(26))  # "0.0", "0.2", ..., "5.0"

CARVE_SEED = 0
CARVE_DEV_FRACTION = 0.1

ToLabel = Callable[[object], str]


def label_map(column: str, mapping: Mapping[str, str]) -> ToLabel:
    """A label converter: raw value (as text) -> class label, ValueError naming `column`."""

    def convert(raw: object) -> str:
        label = mapping.get(str(raw).strip())
        if label is None:
            raise ValueError(f"{column} must be one of {', '.join(mapping)}, found {raw!r}")
        return label

    return convert


def own_labels(column: str, verbalizer: Mapping[str, str]) -> ToLabel:
    """A label converter for files whose raw labels are already the verbalizer's keys."""
    return label_map(column, {label: label for label in verbalizer})


def rows_to_examples(
    path: Path,
    rows: Iterable[tuple[int, dict]],
    columns: Mapping[str, str],
    to_label: ToLabel,
    label_column: str = "label",
) -> list[Example]:
    """Examples from reader rows, with `source` = "path:line".

    Args:
        path: The file the rows come from (for messages).
        rows: `(line, row)` pairs from a `readers` function.
        columns: Template field -> row key holding its text.
        to_label: Raw label value -> class label; raises ValueError for a bad value.
        label_column: Row key of the label.

    Raises:
        DataError: A row misses a column or has a bad label (message names path:line).
    """
    examples = []
    for line, row in rows:
        where = f"{path}:{line}"
        row = {str(k).lstrip("\ufeff"): v for k, v in row.items()}  # MRPC headers start with a BOM
        missing = [key for key in (*columns.values(), label_column) if key not in row]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            label = to_label(row[label_column])
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
        fields = {name: str(row[key]).strip() for name, key in columns.items()}
        examples.append(Example(fields, label, source=where))
    return examples


def carve(examples: Sequence[Example], split: str, key: Callable[[Example], Hashable]) -> list[Example]:
    """The "train" or "dev" part of a fixed, seeded 90/10 split of `examples`.

    Whole groups of examples sharing `key` (e.g. a premise) go to one side, so no
    premise, question or passage is seen in both parts.
    """
    groups: dict[Hashable, list[Example]] = {}
    for example in examples:
        groups.setdefault(key(example), []).append(example)
    train, dev = seeded_split(list(groups.values()), CARVE_DEV_FRACTION, CARVE_SEED)
    return [example for group in (train if split == "train" else dev) for example in group]


def read_headerless_tsv(path: Path, width: int) -> Iterator[tuple[int, list[str]]]:
    """Rows of an unquoted TSV file without a header line (CoLA), checked to be `width` wide."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            for row in reader:
                if not row or row == [""]:
                    continue
                if len(row) != width:
                    raise DataError(
                        f"{path}:{reader.line_num}: expected {width} tab-separated fields, found {len(row)}"
                    )
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: unreadable as text ({err})") from None


def _tsv(folder: str, name: str, columns: Mapping[str, str], to_label: ToLabel, label_column: str) -> list[Example]:
    path = data_file(folder, name)
    return rows_to_examples(path, read_delimited(path, "\t"), columns, to_label, label_column)


def _nli_jsonl(folder: str, name: str) -> list[Example]:
    path = data_file(folder, name)
    columns = {"premise": "premise", "hypothesis": "hypothesis"}
    return rows_to_examples(path, read_jsonl(path), columns, own_labels("label", NLI_VERBALIZER))


def _by_premise(example: Example) -> str:
    return example.fields["premise"]


def _mrpc(split: str) -> list[Example]:
    name = {"train": "train.tsv", "dev": "dev.tsv", "test": "msr_paraphrase_test.txt"}[split]
    columns = {"sentence1": "#1 String", "sentence2": "#2 String"}
    labels = label_map("Quality", {"0": "not_equivalent", "1": "equivalent"})
    return _tsv("MRPC", name, columns, labels, "Quality")


def _rte_glue(split: str) -> list[Example]:
    columns = {"premise": "sentence1", "hypothesis": "sentence2"}
    labels = own_labels("label", ENTAILMENT_VERBALIZER)
    return _tsv("RTE_GLUE", f"{split}.tsv", columns, labels, "label")


def _wnli(split: str) -> list[Example]:
    columns = {"sentence1": "sentence1", "sentence2": "sentence2"}
    labels = label_map("label", {"0": "not_entailment", "1": "entailment"})
    return _tsv("WNLI", f"{split}.tsv", columns, labels, "label")


def _qnli(split: str) -> list[Example]:
    columns = {"question": "question", "sentence": "sentence"}
    labels = own_labels("label", ENTAILMENT_VERBALIZER)
    examples = _tsv("QNLI", "dev.tsv", columns, labels, "label")
    return carve(examples, split, lambda e: e.fields["question"])


def stsb_label(raw: object) -> str:
    """An STS-B score rounded to the nearest 0.2 and written like "3.4", as in T5."""
    try:
        score = float(str(raw))
    except ValueError:
        raise ValueError(f"score must be a number from 0 to 5, found {raw!r}") from None
    if not 0.0 <= score <= 5.0:
        raise ValueError(f"score must be from 0 to 5, found {raw!r}")
    return f"{round(score * 5) / 5:.1f}"


def _stsb(split: str) -> list[Example]:
    columns = {"sentence1": "sentence1", "sentence2": "sentence2"}
    return _tsv("STS-B", f"{split}.tsv", columns, stsb_label, "score")


def _cola(split: str) -> list[Example]:
    path = data_file("CoLA", f"{split}.tsv")
    # Columns: source, label, original star, sentence.
    rows = ((line, {"label": row[1], "sentence": row[3]}) for line, row in read_headerless_tsv(path, 4))
    labels = label_map("label (column 2)", {"0": "unacceptable", "1": "acceptable"})
    return rows_to_examples(path, rows, {"sentence": "sentence"}, labels)


def _glue_diagnostic(split: str) -> list[Example]:
    """diagnostic.tsv is unlabelled: labels come from AX-b, row by row, after checking the text."""
    path = data_file("GLUE_diagnostic", "diagnostic.tsv")
    labelled = _axb_rows()
    examples = []
    for n, (line, row) in enumerate(read_delimited(path, "\t")):
        where = f"{path}:{line}"
        gold = labelled[n] if n < len(labelled) else None
        if gold is None or (gold.fields["premise"], gold.fields["hypothesis"]) != (
            row.get("sentence1", "").strip(),
            row.get("sentence2", "").strip(),
        ):
            raise DataError(f"{where}: sentences do not match the labelled copy in AX-b/AX-b.jsonl")
        examples.append(Example(gold.fields, gold.target, source=where))
    return examples


def _axb_rows() -> list[Example]:
    path = data_file("AX-b", "AX-b.jsonl")
    columns = {"premise": "sentence1", "hypothesis": "sentence2"}
    labels = own_labels("label", ENTAILMENT_VERBALIZER)
    return rows_to_examples(path, read_jsonl(path), columns, labels)


def _mnli(split: str) -> list[Example]:
    return carve(_nli_jsonl("MNLI", "dev_matched.generative-nli.jsonl"), split, _by_premise)


def _snli(split: str) -> list[Example]:
    return carve(_nli_jsonl("SNLI", "dev.generative-nli.jsonl"), split, _by_premise)


@register("mrpc")
def mrpc() -> Task:
    return Task(
        name="mrpc",
        template="mrpc sentence1: {sentence1} sentence2: {sentence2}",
        verbalizer={"not_equivalent": "no", "equivalent": "yes"},
        metrics=("accuracy", "f1"),
        loader=_mrpc,
        splits=("train", "dev", "test"),
        description="GLUE MRPC paraphrase (train 3,668 / dev 408 / test 1,725 from the labelled "
        "msr_paraphrase_test.txt); f1 of 'equivalent'",
    )


@register("rte_glue")
def rte_glue() -> Task:
    return Task(
        name="rte_glue",
        template=RTE_TEMPLATE,
        verbalizer=ENTAILMENT_VERBALIZER,
        metrics=("accuracy",),
        loader=_rte_glue,
        description="GLUE RTE from the GLUE tsv files (train 2,490 / dev 277)",
    )


@register("cola")
def cola() -> Task:
    return Task(
        name="cola",
        template="cola sentence: {sentence}",
        verbalizer={"unacceptable": "no", "acceptable": "yes"},
        metrics=("matthews",),
        loader=_cola,
        description="GLUE CoLA acceptability (train 8,551 / dev 1,043)",
        max_new_tokens=4,
    )


@register("stsb")
def stsb() -> Task:
    return Task(
        name="stsb",
        template="stsb sentence1: {sentence1} sentence2: {sentence2}",
        verbalizer={value: value for value in STSB_LABELS},
        metrics=("pearson", "spearman"),
        loader=_stsb,
        description="GLUE STS-B similarity as T5 does it: score rounded to 0.2, ranked over the "
        "26 values 0.0..5.0 (train 5,749 / dev 1,500)",
        max_new_tokens=4,
    )


@register("qnli")
def qnli() -> Task:
    return Task(
        name="qnli",
        template="qnli question: {question} sentence: {sentence}",
        verbalizer=ENTAILMENT_VERBALIZER,
        metrics=("accuracy",),
        loader=_qnli,
        description="GLUE QNLI; no train here: train/dev carved from the official dev (5,463) by "
        "question, seed 0, 90/10 of questions (train 4,923 / dev 540)",
    )


@register("wnli")
def wnli() -> Task:
    return Task(
        name="wnli",
        template="wnli sentence1: {sentence1} sentence2: {sentence2}",
        verbalizer=ENTAILMENT_VERBALIZER,
        metrics=("accuracy",),
        loader=_wnli,
        description="GLUE WNLI (train 635 / dev 71)",
    )


@register("mnli")
def mnli() -> Task:
    return Task(
        name="mnli",
        template=MNLI_TEMPLATE,
        verbalizer=NLI_VERBALIZER,
        metrics=("accuracy",),
        loader=_mnli,
        description="MNLI; only dev_matched here: train/dev carved from it (9,815) by premise, "
        "seed 0, 90/10 of premises (train 8,835 / dev 980)",
    )


@register("snli")
def snli() -> Task:
    return Task(
        name="snli",
        template="snli hypothesis: {hypothesis} premise: {premise}",
        verbalizer=NLI_VERBALIZER,
        metrics=("accuracy",),
        loader=_snli,
        description="SNLI; only dev here: train/dev carved from it (9,842) by premise, seed 0, "
        "90/10 of premises (train 8,856 / dev 986)",
    )


@register("glue_diagnostic")
def glue_diagnostic() -> Task:
    # RTE's template and verbalizer, so an RTE prompt is evaluated on it unchanged.
    return Task(
        name="glue_diagnostic",
        template=RTE_TEMPLATE,
        verbalizer=ENTAILMENT_VERBALIZER,
        metrics=("matthews",),
        loader=_glue_diagnostic,
        splits=("dev",),
        description="GLUE diagnostic, eval only (dev 1,104 = diagnostic.tsv; it is unlabelled, "
        "labels joined from AX-b after checking each row's text)",
    )
