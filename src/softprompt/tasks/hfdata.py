"""The one door to Hugging Face `datasets`: a lazy import with a one-line error, rows of a
`Dataset` as `(row number, dict)`, local Parquet files and `save_to_disk` folders, and hub
names. Nothing here downloads unless `load_hub` is called (and `datasets` itself honours
`HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from softprompt.errors import DataError

INSTALL_HINT = "pip install 'softprompt[data]'"
# Split names tried, in order, for a task split when a dataset has several.
SPLIT_ALIASES = {"dev": ("validation", "dev", "valid", "val"), "train": ("train",), "test": ("test",)}


def require(why: str):
    """The `datasets` module, or a DataError saying `why` it is needed and how to install it."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{why} needs the `datasets` package: {INSTALL_HINT}") from None
    return datasets


def offline() -> bool:
    """Whether the user asked Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def is_dataset(value: object) -> bool:
    """A `datasets.Dataset` or `DatasetDict`, checked without importing `datasets`."""
    return type(value).__module__.startswith("datasets.") and hasattr(value, "column_names")


def pick_split(data, want: str, where: str) -> tuple[str, object]:
    """(split name, rows): `data` itself if it is one split (named `want`), else its split
    named `want` or an alias of it (dev -> validation)."""
    if not hasattr(data, "keys"):  # a Dataset, not a DatasetDict
        return want, data
    for name in SPLIT_ALIASES.get(want, (want,)):
        if name in data:
            return name, data[name]
    raise DataError(f"{where}: no split for {want!r} (has: {', '.join(data)}); name one like {where}:SPLIT")


def rows(data, name: str) -> Iterator[tuple[int, dict]]:
    """`(row number from 1, row)` pairs of a Dataset or a list of dicts; `name` is for messages."""
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{name}:{number}: expected a row as a dict of fields, found {type(row).__name__}")
        yield number, row


def read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows of a .parquet file, read in memory (nothing is written to a cache)."""
    datasets = require(f"{path}: reading Parquet")
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: unreadable as Parquet ({str(err).splitlines()[0]})") from None
    return rows(datasets.Dataset(table), str(path))


def is_arrow_folder(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))


def read_arrow_folder(path: Path, split: str) -> tuple[str, Iterator[tuple[int, dict]]]:
    """(name for messages, rows) of a `save_to_disk` folder; a DatasetDict gives its `split`."""
    datasets = require(f"{path}: reading a saved Arrow dataset")
    try:
        data = datasets.load_from_disk(str(path))
    except Exception as err:  # noqa: BLE001 - any failure of a user's folder is a data error
        raise DataError(f"{path}: unreadable as a saved dataset ({_one_line(err)})") from None
    if hasattr(data, "keys"):
        chosen, data = pick_split(data, split, str(path))
        name = f"{path}[{chosen}]"
        return name, rows(data, name)
    return str(path), rows(data, str(path))


def parse_hub_name(spec: str) -> tuple[str, str | None, str | None]:
    """ "name", "name:split" or "name:config:split" -> (name, config, split)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return parts[0], None, None
    if len(parts) == 2:
        return parts[0], None, parts[1] or None
    return parts[0], parts[1] or None, ":".join(parts[2:]) or None


def load_hub(path: str, config: str | None, splits: Sequence[str]) -> dict:
    """Splits of hub dataset `path` (config `config`) by name, via `datasets.load_dataset`.

    Any failure (offline, no network, unknown name) becomes one DataError line.
    """
    where = f"{path}" + (f" ({config})" if config else "")
    datasets = require(f"hub dataset {where}")
    try:
        return {split: datasets.load_dataset(path, config, split=split) for split in splits}
    except Exception as err:  # noqa: BLE001 - ConnectionError, FileNotFoundError, HfHubHTTPError, ...
        hint = " (HF offline mode is on)" if offline() else ""
        raise DataError(f"hub dataset {where}: {_one_line(err)}{hint}") from None


def load_hub_split(spec: str, split: str) -> tuple[str, Iterator[tuple[int, dict]]]:
    """(name for messages, rows) of a user's hub dataset "name[:config]:split" for task split `split`."""
    path, config, chosen = parse_hub_name(spec)
    datasets = require(f"hub dataset {spec!r}")
    where = path + (f":{config}" if config else "")
    try:
        data = datasets.load_dataset(path, config, split=chosen) if chosen else datasets.load_dataset(path, config)
    except Exception as err:  # noqa: BLE001
        hint = " (HF offline mode is on)" if offline() else ""
        raise DataError(f"{spec}: no such local file or folder, and as a hub dataset: {_one_line(err)}{hint}") from None
    if chosen is None:
        chosen, data = pick_split(data, split, where)
    name = f"{where}[{chosen}]"
    return name, rows(data, name)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:300]}"
