"""Extractive QA as generation: SQuAD v1.1 and MRQA's in-domain SQuAD.

Only the dev sets are here, so train/dev are carved from them (seed 0, 90/10) by
article (SQuAD) or by context paragraph (MRQA): no passage is in both parts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from softprompt.errors import DataError
from softprompt.tasks.base import Example, Task, register
from softprompt.tasks.glue import CARVE_DEV_FRACTION, CARVE_SEED, carve
from softprompt.tasks.readers import data_file, read_json, read_jsonl, seeded_split

QA_TEMPLATE = "question: {question} context: {context}"
QA_MAX_NEW_TOKENS = 32


def _qa_example(where: str, question: str, context: str, answers: list[str]) -> Example:
    golds = tuple(dict.fromkeys(a.strip() for a in answers if a.strip()))
    if not golds:
        raise DataError(f"{where}: question has no answer text")
    fields = {"question": question.strip(), "context": context.strip()}
    return Example(fields, golds[0], answers=golds, source=where)


def _squad_article(path: Path, article: dict) -> list[Example]:
    examples = []
    for paragraph in article["paragraphs"]:
        for qa in paragraph["qas"]:
            where = f"{path}:{qa.get('id', '?')}"
            answers = [a["text"] for a in qa["answers"]]
            examples.append(_qa_example(where, qa["question"], paragraph["context"], answers))
    return examples


def _squad(split: str) -> list[Example]:
    """Examples of the articles on `split`'s side; source = "path:question id"."""
    path = data_file("SQuAD", "dev-v1.1.json")
    data = read_json(path)
    articles = data.get("data") if isinstance(data, dict) else None
    if not isinstance(articles, list):
        raise DataError(f"{path}: expected a SQuAD v1.1 object with a 'data' list of articles")
    train, dev = seeded_split(articles, CARVE_DEV_FRACTION, CARVE_SEED)
    examples = []
    for number, article in enumerate(train if split == "train" else dev):
        try:
            examples.extend(_squad_article(path, article))
        except (KeyError, TypeError, AttributeError) as err:
            title = article.get("title", number) if isinstance(article, dict) else number
            raise DataError(f"{path}: article {title!r}: malformed, bad field {err}") from None
    return examples


def _mrqa_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """MRQA rows after the header line (`{"header": ...}`), which is checked and skipped."""
    rows = read_jsonl(path)
    first = next(rows, None)
    if first is None or "header" not in first[1]:
        raise DataError(f'{path}:1: expected an MRQA header line {{"header": ...}}')
    return rows


def _mrqa_squad(split: str) -> list[Example]:
    path = data_file("MRQA", "SQuAD.dev.jsonl.gz")
    examples = []
    for line, row in _mrqa_rows(path):
        where = f"{path}:{line}"
        try:
            for qa in row["qas"]:
                examples.append(_qa_example(where, qa["question"], row["context"], qa["answers"]))
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(f"{where}: missing or malformed field {err}") from None
    return carve(examples, split, lambda e: e.source)


@register("squad")
def squad() -> Task:
    return Task(
        name="squad",
        template=QA_TEMPLATE,
        verbalizer=None,
        metrics=("squad_em", "squad_f1"),
        loader=_squad,
        description="SQuAD v1.1; only dev here: train/dev carved from it (10,570 questions, 48 "
        "articles) by article, seed 0, 90/10 of articles (train 9,643 / dev 927)",
        max_new_tokens=QA_MAX_NEW_TOKENS,
    )


@register("mrqa_squad")
def mrqa_squad() -> Task:
    return Task(
        name="mrqa_squad",
        template=QA_TEMPLATE,
        verbalizer=None,
        metrics=("squad_em", "squad_f1"),
        loader=_mrqa_squad,
        description="MRQA in-domain SQuAD dev; train/dev carved from it (10,507 questions, 2,067 "
        "contexts) by context, seed 0, 90/10 of contexts (train 9,508 / dev 999)",
        max_new_tokens=QA_MAX_NEW_TOKENS,
    )
