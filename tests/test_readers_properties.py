"""Property-based tests (Hypothesis) of the data readers (tasks/readers.py) and the user-task
builder (tasks/user.py): arbitrary bytes, encodings, quoting and field contents either load
or fail with one SoftPromptError line -- never another exception, never a multi-line message.
Bounded example counts keep the suite fast."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from softprompt.errors import SoftPromptError
from softprompt.tasks.readers import read_rows
from softprompt.tasks.user import parse_label_words, user_task

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SUFFIXES = [".csv", ".tsv", ".jsonl", ".csv.gz", ".jsonl.gz"]
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]
FIELD = st.text(max_size=12)  # any characters: quotes, delimiters, newlines, NUL, surrogates excluded by encoders
CELL = st.text(st.characters(exclude_categories=("Cs",)), max_size=15)


def _one_line(err: SoftPromptError) -> None:
    message = str(err)
    assert message and "\n" not in message and "\r" not in message, repr(message)


def _write(folder: Path, suffix: str, data: bytes) -> Path:
    path = folder / f"data{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    return path


def _load(path: Path):
    try:
        return list(read_rows(path))
    except SoftPromptError as err:
        _one_line(err)
        return None


@BOUNDED
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=300))
def test_arbitrary_bytes_load_or_give_one_error_line(suffix, data):
    with tempfile.TemporaryDirectory() as tmp:
        rows = _load(_write(Path(tmp), suffix, data))
    if rows is not None:
        assert all(isinstance(line, int) and isinstance(row, dict) for line, row in rows)


@BOUNDED
@given(
    suffix=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    encoding=st.sampled_from(ENCODINGS),
    header=st.lists(CELL, min_size=1, max_size=3),
    rows=st.lists(st.lists(CELL, min_size=0, max_size=4), max_size=5),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
)
@example(suffix=".csv", encoding="utf-8", header=["a", "\n"], rows=[["x"]], quoting=csv.QUOTE_MINIMAL)  # a header
def test_text_in_any_encoding_and_quoting_loads_or_gives_one_error_line(suffix, encoding, header, rows, quoting):
    if suffix == ".jsonl":
        text = "".join(json.dumps(dict(zip(header, r)), ensure_ascii=False) + "\n" for r in rows)
    else:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, delimiter="\t" if suffix == ".tsv" else ",", quoting=quoting)
        writer.writerow(header)
        writer.writerows(rows)
        text = buffer.getvalue()
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        _load(_write(Path(tmp), suffix, data))


@BOUNDED
@given(
    header=st.lists(CELL.filter(lambda s: s.strip()), min_size=2, max_size=3, unique=True),
    rows=st.data(),
)
def test_quoted_csv_round_trips_exactly(header, rows):
    """What csv.writer writes (QUOTE_MINIMAL, UTF-8) reads back field for field."""
    body = rows.draw(st.lists(st.lists(CELL, min_size=len(header), max_size=len(header)), max_size=5))
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([header, *body])
    with tempfile.TemporaryDirectory() as tmp:
        got = _load(_write(Path(tmp), ".csv", buffer.getvalue().encode("utf-8")))
    assert got is not None
    assert [row for _, row in got] == [dict(zip(header, r)) for r in body]


@BOUNDED
@given(spec=st.text(max_size=40))
def test_label_words_parse_or_give_one_error_line(spec):
    try:
        verbalizer = parse_label_words(spec)
    except SoftPromptError as err:
        _one_line(err)
        return
    assert len(verbalizer) >= 2 and len(set(verbalizer.values())) == len(verbalizer)


VALUE = st.one_of(
    CELL,
    st.integers(),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(CELL, st.integers(), max_size=2),
)


@BOUNDED
@given(
    rows=st.lists(st.dictionaries(st.sampled_from(["text", "label", "other", ""]), VALUE, max_size=4), max_size=6),
    verbalizer=st.one_of(st.none(), st.just({"0": "no", "1": "yes"})),
    template=st.one_of(
        st.none(), st.sampled_from(["{text} ->", "{text} {missing}", "{", "}{text}{{", "{0}", "{text!r}"])
    ),
)
def test_user_task_over_any_rows_loads_or_gives_one_error_line(rows, verbalizer, template):
    try:
        task = user_task("mine", {"train": rows}, ["text"], "label", verbalizer, template)
        examples = task.load("train")
        for example in examples:
            task.format(example)
    except SoftPromptError as err:
        _one_line(err)
        return
    assert len(examples) == len(rows)
    assert [e.fields["text"] for e in examples] == [str(r["text"]) for r in rows]


@BOUNDED
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=200))
def test_user_task_over_arbitrary_file_bytes_loads_or_gives_one_error_line(suffix, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(Path(tmp), suffix, data)
        try:
            task = user_task("mine", {"train": path}, ["text"], "label", {"0": "no", "1": "yes"})
            task.load("train")
        except SoftPromptError as err:
            _one_line(err)
