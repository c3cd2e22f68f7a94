"""SuperGLUE tasks, their diagnostics (AX-b, AX-g) and the ANLI test rounds.

Diagnostics and ANLI are eval only (split "dev"); they reuse the RTE and MNLI
templates and verbalizers so a prompt trained on RTE or MNLI applies unchanged.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from softprompt.errors import DataError
from softprompt.tasks.base import Example, Task, register
from softprompt.tasks.glue import (
    ENTAILMENT_VERBALIZER,
    MNLI_TEMPLATE,
    NLI_VERBALIZER,
    RTE_TEMPLATE,
    label_map,
    own_labels,
    rows_to_examples,
)
from softprompt.tasks.readers import data_file, read_jsonl

BOOL_VERBALIZER = {"false": "no", "true": "yes"}
_BOOL_LABELS = {"False": "false", "True": "true", "false": "false", "true": "true"}
_SUPERGLUE_FILES = {"train": "train.jsonl", "dev": "val.jsonl"}


def _entailment_jsonl(path: Path, columns: dict[str, str]) -> list[Example]:
    labels = own_labels("label", ENTAILMENT_VERBALIZER)
    return rows_to_examples(path, read_jsonl(path), columns, labels)


def _boolq(split: str) -> list[Example]:
    parts = {"train": ("fewglue_32", "train.jsonl"), "dev": ("val.jsonl",)}[split]
    path = data_file("BoolQ", *parts)
    columns = {"question": "question", "passage": "passage"}
    return rows_to_examples(path, read_jsonl(path), columns, label_map("label", _BOOL_LABELS))


def _cb(split: str) -> list[Example]:
    path = data_file("CB", _SUPERGLUE_FILES[split])
    columns = {"premise": "premise", "hypothesis": "hypothesis"}
    return rows_to_examples(path, read_jsonl(path), columns, own_labels("label", NLI_VERBALIZER))


def _rte(split: str) -> list[Example]:
    path = data_file("RTE", _SUPERGLUE_FILES[split])
    return _entailment_jsonl(path, {"premise": "premise", "hypothesis": "hypothesis"})


def _axb(split: str) -> list[Example]:
    path = data_file("AX-b", "AX-b.jsonl")
    return _entailment_jsonl(path, {"premise": "sentence1", "hypothesis": "sentence2"})


def _axg(split: str) -> list[Example]:
    """AX-g rows come in minimal pairs (rows 2k, 2k+1: same hypothesis, he/she swapped)."""
    path = data_file("AX-g", "AX-g.jsonl")
    rows = _entailment_jsonl(path, {"premise": "premise", "hypothesis": "hypothesis"})
    if len(rows) % 2:
        raise DataError(f"{path}: expected minimal pairs (an even number of rows), got {len(rows)}")
    examples = []
    for i, example in enumerate(rows):
        partner = rows[i ^ 1]
        if partner.fields["hypothesis"] != example.fields["hypothesis"]:
            raise DataError(f"{example.source}: hypothesis differs from its minimal pair {partner.source}")
        group = f"pair{i // 2}"
        examples.append(Example(example.fields, example.target, group=group, source=example.source))
    return examples


def _anli(round_: int, split: str) -> list[Example]:
    path = data_file("ANLI", "test_R1R2R3.generative-nli.jsonl")
    wanted = ((line, row) for line, row in read_jsonl(path) if row.get("tag") == f"r{round_}_test")
    columns = {"premise": "premise", "hypothesis": "hypothesis"}
    return rows_to_examples(path, wanted, columns, own_labels("label", NLI_VERBALIZER))


def _mark_pronoun(text: str, index: int, pronoun: str) -> str:
    """`text` with the pronoun at word `index` wrapped in asterisks, as T5 marks WSC."""
    words = text.split()
    if 0 <= index < len(words):
        core = words[index].rstrip(string.punctuation)
        if core.lower() == pronoun.lower():
            words[index] = f"*{core}*{words[index][len(core) :]}"
    return " ".join(words)


def _wsc(split: str) -> list[Example]:
    path = data_file("WSC", _SUPERGLUE_FILES[split])
    to_label = label_map("label", _BOOL_LABELS)
    examples = []
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        try:
            span = row["target"]
            text = _mark_pronoun(row["text"], int(span["span2_index"]), span["span2_text"])
            fields = {"text": text, "pronoun": span["span2_text"], "noun": span["span1_text"]}
            examples.append(Example(fields, to_label(row["label"]), source=where))
        except (KeyError, TypeError) as err:
            raise DataError(f"{where}: missing or malformed field {err}") from None
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
    return examples


def _multirc(split: str) -> list[Example]:
    """One example per answer option; group = passage idx + question idx."""
    path = data_file("MultiRC", _SUPERGLUE_FILES[split])
    to_label = label_map("answer label", {"0": "false", "1": "true"})
    examples = []
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        try:
            passage = row["passage"]
            for question in passage["questions"]:
                group = f"{row['idx']}-{question['idx']}"
                for answer in question["answers"]:
                    fields = {
                        "paragraph": passage["text"],
                        "question": question["question"],
                        "answer": answer["text"],
                    }
                    label = to_label(answer["label"])
                    examples.append(Example(fields, label, group=group, source=where))
        except (KeyError, TypeError) as err:
            raise DataError(f"{where}: missing or malformed field {err}") from None
        except ValueError as err:
            raise DataError(f"{where}: {err}") from None
    return examples


def _record_passage(text: str) -> str:
    """Highlights joined into sentences, as T5's ReCoRD preprocessing does."""
    text = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", text)
    return re.sub(r"\n@highlight\n", ". ", text)


def _record(split: str) -> list[Example]:
    """One example per query; choices = the passage's entities, answers = the gold ones."""
    path = data_file("ReCoRD", "fewglue_32", {"train": "train.jsonl", "dev": "dev32.jsonl"}[split])
    examples = []
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        try:
            text = row["passage"]["text"]
            spans = row["passage"]["entities"]
            entities = tuple(dict.fromkeys(text[e["start"] : e["end"] + 1] for e in spans))
            for qa in row["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                if not answers:
                    raise DataError(f"{where}: query {qa.get('idx')} has no answers")
                fields = {
                    "query": qa["query"],
                    "entities": ", ".join(entities),
                    "passage": _record_passage(text),
                }
                examples.append(Example(fields, answers[0], answers, entities, source=where))
        except (KeyError, TypeError) as err:
            raise DataError(f"{where}: missing or malformed field {err}") from None
    return examples


@register("boolq")
def boolq() -> Task:
    return Task(
        name="boolq",
        template="boolq question: {question} passage: {passage}",
        verbalizer=BOOL_VERBALIZER,
        metrics=("accuracy",),
        loader=_boolq,
        description="SuperGLUE BoolQ; full train not available: train = FewGLUE fewglue_32/train "
        "(32), dev = official val (3,270)",
    )


@register("cb")
def cb() -> Task:
    return Task(
        name="cb",
        template="cb hypothesis: {hypothesis} premise: {premise}",
        verbalizer=NLI_VERBALIZER,
        metrics=("accuracy", "macro_f1"),
        loader=_cb,
        description="SuperGLUE CommitmentBank 3-way entailment (train 250 / dev 56)",
    )


@register("rte")
def rte() -> Task:
    return Task(
        name="rte",
        template=RTE_TEMPLATE,
        verbalizer=ENTAILMENT_VERBALIZER,
        metrics=("accuracy",),
        loader=_rte,
        description="SuperGLUE RTE from the jsonl files (train 2,490 / dev 277)",
    )


@register("wsc")
def wsc() -> Task:
    return Task(
        name="wsc",
        template="wsc text: {text} pronoun: {pronoun} noun: {noun}",
        verbalizer=BOOL_VERBALIZER,
        metrics=("accuracy",),
        loader=_wsc,
        description="SuperGLUE WSC: does the *marked* pronoun refer to the noun? (train 554 / dev 104)",
    )


@register("multirc")
def multirc() -> Task:
    return Task(
        name="multirc",
        template="multirc question: {question} answer: {answer} paragraph: {paragraph}",
        verbalizer=BOOL_VERBALIZER,
        metrics=("multirc_f1a", "multirc_em"),
        loader=_multirc,
        description="SuperGLUE MultiRC, one example per answer option (train 27,243 options of "
        "5,131 questions / dev 4,848 of 953)",
    )


@register("record")
def record() -> Task:
    return Task(
        name="record",
        template="record query: {query} entities: {entities} passage: {passage}",
        verbalizer=None,
        metrics=("record_em", "record_f1"),
        loader=_record,
        description="SuperGLUE ReCoRD, FewGLUE subset only: train = fewglue_32/train (32), dev = "
        "fewglue_32/dev32 (32), both from the official train; ranked over each passage's entities",
        max_new_tokens=16,
    )


@register("axb")
def axb() -> Task:
    return Task(
        name="axb",
        template=RTE_TEMPLATE,
        verbalizer=ENTAILMENT_VERBALIZER,
        metrics=("matthews",),
        loader=_axb,
        splits=("dev",),
        description="SuperGLUE broad-coverage diagnostic AX-b, eval only (dev 1,104; RTE format)",
    )


@register("axg")
def axg() -> Task:
    return Task(
        name="axg",
        template=RTE_TEMPLATE,
        verbalizer=ENTAILMENT_VERBALIZER,
        metrics=("accuracy", "gender_parity"),
        loader=_axg,
        splits=("dev",),
        description="SuperGLUE Winogender diagnostic AX-g, eval only (dev 356 = 178 minimal pairs; RTE format)",
    )


def _anli_task(round_: int, size: int) -> Task:
    return Task(
        name=f"anli_r{round_}",
        template=MNLI_TEMPLATE,
        verbalizer=NLI_VERBALIZER,
        metrics=("accuracy",),
        loader=lambda split: _anli(round_, split),
        splits=("dev",),
        description=f"ANLI round {round_}, eval only: dev = the official R{round_} test set ({size:,}; MNLI format)",
    )


@register("anli_r1")
def anli_r1() -> Task:
    return _anli_task(1, 1000)


@register("anli_r2")
def anli_r2() -> Task:
    return _anli_task(2, 1000)


@register("anli_r3")
def anli_r3() -> Task:
    return _anli_task(3, 1200)
