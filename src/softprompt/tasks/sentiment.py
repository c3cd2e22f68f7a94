"""SST-2 (GLUE) and IMDB, the domain-shift target of an SST-2 prompt."""

from __future__ import annotations

from softprompt.errors import DataError
from softprompt.tasks.base import Example, Task, register
from softprompt.tasks.readers import data_file, read_delimited, read_imdb

SENTIMENT_TEMPLATE = "{sentence} The sentiment of this review is"
SENTIMENT_VERBALIZER = {"negative": "negative", "positive": "positive"}


def _sst2(split: str) -> list[Example]:
    path = data_file("SST-2", f"{split}.tsv")
    examples = []
    for line, row in read_delimited(path):
        label = {"0": "negative", "1": "positive"}.get(row.get("label", "").strip())
        if label is None:
            raise DataError(f"{path}:{line}: label must be 0 or 1, found {row.get('label')!r}")
        examples.append(Example({"sentence": row["sentence"].strip()}, label, source=f"{path}:{line}"))
    return examples


def _imdb(split: str) -> list[Example]:
    path = data_file("IMDB", "aclImdb.tar.gz")
    names = {"pos": "positive", "neg": "negative"}
    return [
        Example({"sentence": text}, names[label], source=f"{path}:{member}")
        for text, label, member in read_imdb(path, "train" if split == "train" else "test")
    ]


@register("sst2")
def sst2() -> Task:
    return Task(
        name="sst2",
        template=SENTIMENT_TEMPLATE,
        verbalizer=SENTIMENT_VERBALIZER,
        metrics=("accuracy",),
        loader=_sst2,
        splits=("train", "dev"),
        description="GLUE SST-2 movie-review sentiment (train 67,349 / dev 872)",
    )


@register("imdb")
def imdb() -> Task:
    # Same template and verbalizer as SST-2, so an SST-2 prompt applies unchanged.
    return Task(
        name="imdb",
        template=SENTIMENT_TEMPLATE,
        verbalizer=SENTIMENT_VERBALIZER,
        metrics=("accuracy",),
        loader=_imdb,
        splits=("train", "dev", "test"),
        description="IMDB reviews, domain shift for SST-2 (dev = the official test split, 25,000)",
        max_new_tokens=4,
    )
