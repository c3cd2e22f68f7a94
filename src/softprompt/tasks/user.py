"""Tasks described on the command line (or in Python) over a user's own data: CSV, TSV,
JSONL or Parquet files, saved Arrow datasets, hub names, `datasets.Dataset`s or lists of dicts
(`sources.open_source` says which)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from softprompt.errors import ConfigError, DataError
from softprompt.tasks.base import Example, Task
from softprompt.tasks.sources import describe, open_source


def parse_label_words(spec: str) -> dict[str, str]:
    """ "0=negative,1=positive" -> {"0": "negative", "1": "positive"}; "neg,pos" maps each to itself."""
    pairs = [p.strip() for p in spec.split(",") if p.strip()]
    verbalizer: dict[str, str] = {}
    for pair in pairs:
        label, _, words = pair.partition("=")
        label, words = label.strip(), (words or label).strip()
        if not label or not words:
            raise ConfigError(f"--labels {spec!r}: {pair!r} has an empty label or label word")
        if label in verbalizer:
            raise ConfigError(f"--labels {spec!r}: label {label!r} is given twice")
        if words in verbalizer.values():
            raise ConfigError(
                f"--labels {spec!r}: label word {words!r} is given to two labels (one would be unreachable)"
            )
        verbalizer[label] = words
    if len(verbalizer) < 2:
        raise ConfigError(f"--labels {spec!r}: expected at least two labels like '0=negative,1=positive'")
    return verbalizer


def user_task(
    name: str,
    files: Mapping[str, object],
    text_fields: Sequence[str],
    label_field: str,
    verbalizer: Mapping[str, str] | None,
    template: str | None = None,
) -> Task:
    """A task over the user's files.

    Args:
        name: Task name recorded with the prompt.
        files: Split name -> its data: a path (.csv, .tsv, .jsonl, .parquet, or a folder written
            by `Dataset.save_to_disk`), a hub name ("name", "name:split", "name:config:split"),
            a `datasets.Dataset`/`DatasetDict`, or a list of dicts.
        text_fields: Fields of each row that form the input.
        label_field: Field holding the label (a verbalizer key) or the target text.
        verbalizer: Label -> label words; None makes it a generation task.
        template: Input template; default "{name} f1: {f1} f2: {f2}".
    """
    if not text_fields:
        raise ConfigError("--text-field: name at least one field of your data file")
    template = template or " ".join([name, *(f"{f}: {{{f}}}" for f in text_fields)])

    def load(split: str) -> list[Example]:
        name, rows = open_source(files[split], split)
        examples = []
        for line, row in rows:
            where = f"{name}:{line}"
            missing = [f for f in (*text_fields, label_field) if f not in row]
            if missing:
                raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
            label = str(row[label_field]).strip()
            if verbalizer is not None and label not in verbalizer:
                raise DataError(
                    f"{where}: label {label!r} is not one of the label words' keys ({', '.join(verbalizer)})"
                )
            fields = {f: str(row[f]) for f in text_fields}
            if not any(v.strip() for v in fields.values()):
                raise DataError(f"{where}: empty input (field(s) {', '.join(text_fields)} hold no text)")
            examples.append(Example(fields, label, source=where))
        if not examples:
            raise DataError(f"{name}: no examples")
        return examples

    return Task(
        name=name,
        template=template,
        verbalizer=dict(verbalizer) if verbalizer else None,
        metrics=("accuracy",) if verbalizer else ("squad_em", "squad_f1"),
        loader=load,
        splits=tuple(files),
        description=f"user task over {', '.join(describe(v) for v in files.values())}",
    )
