"""Where a user task's split comes from: a file or folder path, a hub name, or rows in memory.

`open_source(value, split)` gives `(name, rows)`: `name` prefixes error messages and example
sources (`name:row`), `rows` are `(line or row number, dict)` pairs. Accepted values:

* a path to a .csv/.tsv/.jsonl file (line numbers as in the file), a .parquet file, or a
  folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (row numbers from 1);
* a Hugging Face hub name, "name", "name:split" or "name:config:split", when it is not an
  existing path (needs `datasets` and a network or the HF cache);
* a `datasets.Dataset` or `DatasetDict`, or a list of dicts (Python API).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from softprompt.errors import DataError
from softprompt.tasks import hfdata
from softprompt.tasks.readers import read_rows

_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".gz", ".parquet", ".arrow", ".txt")
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]*){0,2}$")

Rows = Iterator[tuple[int, dict]]


def looks_like_hub_name(value: str) -> bool:
    """A string that names a hub dataset rather than a file: "imdb", "user/name:split"."""
    return bool(_HUB_NAME.match(value)) and not value.lower().endswith(_FILE_SUFFIXES)


def describe(value: object) -> str:
    """A short name for a split's value, for task descriptions and messages."""
    if hfdata.is_dataset(value):
        return f"a {type(value).__name__} of {getattr(value, 'num_rows', '?')} rows"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} rows"
    return str(value)


def open_source(value: object, split: str) -> tuple[str, Rows]:
    """(name, rows) of one split's data; see the module docstring for what `value` may be."""
    if hfdata.is_dataset(value):
        chosen, data = hfdata.pick_split(value, split, "dataset")
        name = f"dataset[{chosen}]"
        return name, hfdata.rows(data, name)
    if isinstance(value, (list, tuple)):
        name = f"rows[{split}]"
        return name, hfdata.rows(value, name)
    if isinstance(value, Mapping):
        raise DataError(f"{split} data: a dict is not a dataset; pass a list of row dicts or a datasets.Dataset")
    if not isinstance(value, (str, Path)):
        raise DataError(
            f"{split} data: expected a file path, hub name, datasets.Dataset or list of dicts, "
            f"found {type(value).__name__}"
        )
    path = Path(value)
    if not path.exists() and looks_like_hub_name(str(value)):
        return hfdata.load_hub_split(str(value), split)
    if path.is_dir() and hfdata.is_arrow_folder(path):
        return hfdata.read_arrow_folder(path, split)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return str(path), read_rows(path, split)
