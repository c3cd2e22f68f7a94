"""Readers for the file formats benchmarks ship in: TSV/CSV, JSONL (optionally gzipped),
JSON, and tar archives of one-review-per-file text (IMDB).

Every reader yields `(line_number, row)` and raises `DataError` naming `file:line`
for a malformed row, so task loaders can say where bad data is.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import sys
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from softprompt.errors import DataError

csv.field_size_limit(sys.maxsize)

_DATA_ENV = "SOFTPROMPT_DATA"


def local_root() -> Path | None:
    """The local benchmark data folder, or None.

    `$SOFTPROMPT_DATA` if set (it then replaces the search), else the first `shared/data`
    found beside the current directory or the source checkout (the project layout keeps
    data in ../shared/data).
    """
    if env := os.environ.get(_DATA_ENV):
        return Path(env)
    starts = [Path.cwd(), Path(__file__).resolve()]
    for start in starts:
        for parent in [start, *start.parents]:
            for candidate in (parent / "shared" / "data", parent / "data"):
                if (candidate / "SST-2").is_dir():
                    return candidate
    return None


def data_root() -> Path:
    """The local benchmark data folder (`local_root`), or a DataError saying how to give one."""
    root = local_root()
    if root is None:
        raise DataError(
            "benchmark data folder not found: set SOFTPROMPT_DATA to the folder holding SST-2/, "
            "CB/, ... (in the project layout it is ../shared/data)"
        )
    return root


def data_file(*parts: str) -> Path:
    """A built-in task's data file, from the first source that has it, in order:
    `$SOFTPROMPT_DATA`, else ../shared/data; then the Hugging Face hub copy cached under
    `$SOFTPROMPT_CACHE/data` (fetched and written in the local layout once, by `tasks.hub`).

    Raises:
        DataError: No source has it; one line naming all three and why each failed.
    """
    root = local_root()
    if root is not None and (path := root.joinpath(*parts)).is_file():
        return path
    from softprompt.tasks import hub  # imports nothing heavy; `datasets` only when fetching

    try:
        return hub.fetch(*parts)
    except DataError as err:
        hub_reason = str(err)
    name = "/".join(parts)
    env = os.environ.get(_DATA_ENV)
    first = f"$SOFTPROMPT_DATA={env} has no {name}" if env else "$SOFTPROMPT_DATA is not set"
    if env:
        second = "../shared/data not searched (SOFTPROMPT_DATA replaces it)"
    elif root is not None:
        second = f"{root} has no {name}"
    else:
        second = "no ../shared/data folder beside the project"
    raise DataError(
        f"benchmark file {name} not found in any data source: 1) {first}; 2) {second}; "
        f"3) Hugging Face hub: {hub_reason}"
    )


def _open_text(path: Path):
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as err:
        raise DataError(f"{path}: cannot open ({err.strerror or err})") from None


def read_delimited(
    path: Path, delimiter: str | None = None, quoting: int | None = None
) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a TSV/CSV file with a header line, as dicts.

    The delimiter defaults from the suffix (.tsv -> tab, else comma). GLUE TSVs are not
    quoted, so `quoting` defaults to QUOTE_NONE for tabs.
    """
    if delimiter is None:
        delimiter = "\t" if path.suffix in (".tsv", ".gz") and ".tsv" in path.name else ","
    if quoting is None:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with _open_text(path) as handle:
        try:
            reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}:1: empty file, expected a header line")
            for row in reader:
                line = reader.line_num
                if not row or row == [""]:
                    continue
                if len(row) != len(header):
                    raise DataError(
                        f"{path}:{line}: expected {len(header)} fields "
                        f"({', '.join(map(_shown, header))}), found {len(row)}"
                    )
                yield line, dict(zip(header, row))
        except (UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"{path}: unreadable as text ({err})") from None


def _shown(name: str) -> str:
    """A field name for a one-line message: as is when printable, else escaped ('a\\nb')."""
    return name if name.isprintable() else repr(name)[1:-1]


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Objects of a JSON-lines file (.jsonl or .jsonl.gz)."""
    with _open_text(path) as handle:
        try:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{line}: invalid JSON ({err.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{line}: expected a JSON object per line")
                yield line, row
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: unreadable as UTF-8 text ({err.reason})") from None


def read_json(path: Path):
    with _open_text(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def read_rows(path: Path, split: str = "train") -> Iterator[tuple[int, dict]]:
    """Rows of a user data file, by suffix: .jsonl/.jsonl.gz, .tsv, .csv, .parquet, or a folder
    written by `datasets`' `save_to_disk` (a DatasetDict gives its `split`; dev -> validation).

    Parquet and Arrow need the optional `datasets` package (imported only for them).
    """
    from softprompt.tasks import hfdata

    name = path.name.lower()
    if name.endswith(".parquet"):
        return hfdata.read_parquet(path) if path.is_file() else _missing(path)
    if path.is_dir():
        if hfdata.is_arrow_folder(path):
            return hfdata.read_arrow_folder(path, split)[1]
        raise DataError(
            f"{path}: a folder, but not one written by Dataset.save_to_disk "
            "(no dataset_info.json, state.json or dataset_dict.json)"
        )
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return read_jsonl(path)
    if name.endswith((".tsv", ".csv", ".tsv.gz", ".csv.gz")):
        return read_delimited(path, "\t" if ".tsv" in name else ",", csv.QUOTE_MINIMAL)
    raise DataError(
        f"{path}: unknown file type, expected .csv, .tsv, .jsonl or .parquet, or a saved Arrow dataset folder"
    )


def _missing(path: Path):
    raise DataError(f"{path}: file not found")


def read_imdb(archive: Path, split: str) -> list[tuple[str, str, str]]:
    """(text, "pos"|"neg", member name) for one split of aclImdb.tar.gz, read in place.

    The archive keeps part of the official train split under aclImdb/val/, so "train"
    reads train/ and val/ together.
    """
    folders = {"train": ("train", "val"), "test": ("test",)}[split]
    prefixes = tuple(f"aclImdb/{f}/{label}/" for f in folders for label in ("pos", "neg"))
    reviews = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.startswith(prefixes):
                    continue
                label = member.name.split("/")[2]
                raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
                text = raw.replace("<br />", " ").strip()
                reviews.append((text, label, member.name))
    except (OSError, tarfile.TarError) as err:
        raise DataError(f"{archive}: cannot read archive ({err})") from None
    reviews.sort(key=lambda r: r[2])
    return reviews


def seeded_split(items: Sequence, fraction: float, seed: int = 0) -> tuple[list, list]:
    """Carve a fixed, seeded (train, held-out) split out of `items`.

    Used for tasks that have no train split here; the same seed always gives the
    same split, and the two parts never overlap.
    """
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = int(round(len(items) * (1 - fraction)))
    return [items[i] for i in sorted(order[:cut])], [items[i] for i in sorted(order[cut:])]
