"""tasks/user.py: tasks over a user's own CSV, TSV or JSONL file, and their error messages."""

from __future__ import annotations

import re

import pytest

from helpers import write_csv, write_jsonl
from softprompt.errors import ConfigError, DataError
from softprompt.tasks.user import parse_label_words, user_task

VERBALIZER = {"0": "negative", "1": "positive"}
ROWS = [("a great movie", "1"), ("an awful movie", "0"), ("great", "1")]


def make(path, verbalizer=VERBALIZER, fields=("sentence",), label="label", template=None, name="reviews"):
    return user_task(name, {"train": path}, list(fields), label, verbalizer, template)


def assert_one_line_at(err: pytest.ExceptionInfo, path, line: int) -> str:
    msg = str(err.value)
    assert f"{path}:{line}" in msg, msg
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(("suffix", "delimiter"), [(".csv", ","), (".tsv", "\t")])
def test_delimited_file(tmp_path, suffix, delimiter):
    path = write_csv(tmp_path / f"train{suffix}", ROWS, delimiter=delimiter)
    task = make(path)
    examples = task.load("train")
    assert [e.fields["sentence"] for e in examples] == [r[0] for r in ROWS]
    assert [e.target for e in examples] == ["1", "0", "1"]
    assert [e.source for e in examples] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert task.format(examples[0]) == "reviews sentence: a great movie"
    assert task.target_text(examples[1]) == "negative"
    assert task.is_classification and task.metrics == ("accuracy",) and task.splits == ("train",)


def test_csv_with_quoted_commas_and_several_text_fields(tmp_path):
    path = write_csv(
        tmp_path / "t.csv",
        [("yes, really", "a movie", "1"), ("no", "b, c", "0")],
        header=("premise", "hypothesis", "label"),
    )
    task = make(path, fields=("premise", "hypothesis"), template="p: {premise} h: {hypothesis}")
    examples = task.load("train")
    assert task.format(examples[0]) == "p: yes, really h: a movie"
    assert task.format(examples[1]) == "p: no h: b, c"


def test_jsonl_file_with_numeric_labels(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "great", "y": 1}, {"text": "awful", "y": 0, "extra": "x"}])
    task = make(path, fields=("text",), label="y")
    examples = task.load("train")
    assert [(e.fields, e.target) for e in examples] == [({"text": "great"}, "1"), ({"text": "awful"}, "0")]
    assert examples[1].source == f"{path}:2"


def test_generation_task_without_label_words(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "who?", "answer": "a b"}])
    task = make(path, verbalizer=None, fields=("question",), label="answer")
    assert not task.is_classification and task.metrics[0] == "squad_em"
    (example,) = task.load("train")
    assert task.target_text(example) == "a b"


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("sentence,label\ngreat,1\n\nawful,0\n")
    examples = make(path).load("train")
    assert [e.source for e in examples] == [f"{path}:2", f"{path}:4"]


def test_wrong_number_of_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("sentence,label\ngreat,1\n\nawful,0,extra\n")
    with pytest.raises(DataError) as err:
        make(path).load("train")
    msg = assert_one_line_at(err, path, 4)
    assert "expected 2 fields" in msg and "found 3" in msg


def test_tsv_row_with_too_few_fields(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("sentence\tlabel\ngreat\t1\nawful\n")
    with pytest.raises(DataError) as err:
        make(path).load("train")
    assert_one_line_at(err, path, 3)


def test_invalid_json(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"sentence": "great", "label": "1"}\n{"sentence": "awful", "label": \n')
    with pytest.raises(DataError) as err:
        make(path).load("train")
    assert "invalid JSON" in assert_one_line_at(err, path, 2)


def test_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"sentence": "great", "label": "1"}\n\n["awful", "0"]\n')
    with pytest.raises(DataError) as err:
        make(path).load("train")
    assert "JSON object" in assert_one_line_at(err, path, 3)


def test_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"sentence": "great", "label": "1"}, {"sentence": "awful"}])
    with pytest.raises(DataError) as err:
        make(path).load("train")
    assert "missing field(s) label" in assert_one_line_at(err, path, 2)


def test_missing_text_field_in_csv_header(tmp_path):
    path = write_csv(tmp_path / "t.csv", ROWS, header=("text", "label"))
    with pytest.raises(DataError) as err:
        make(path).load("train")
    assert "sentence" in assert_one_line_at(err, path, 2)


def test_label_not_in_the_verbalizer(tmp_path):
    path = write_csv(tmp_path / "t.csv", [("great", "1"), ("meh", "2")])
    with pytest.raises(DataError) as err:
        make(path).load("train")
    msg = assert_one_line_at(err, path, 3)
    assert "'2'" in msg and "0, 1" in msg


@pytest.mark.parametrize(
    ("name", "text"),
    [("t.csv", ""), ("t.tsv", ""), ("t.jsonl", ""), ("t.csv", "sentence,label\n"), ("t.jsonl", "\n\n")],
)
def test_empty_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as err:
        make(path).load("train")
    msg = str(err.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    assert "empty" in msg or "no examples" in msg


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        make(tmp_path / "nope.csv").load("train")
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    with pytest.raises(DataError, match="unknown file type"):
        make(other).load("train")


def test_split_without_file(tmp_path):
    task = make(write_csv(tmp_path / "t.csv", ROWS))
    with pytest.raises(ConfigError, match="no split 'dev'"):
        task.load("dev")


def test_no_text_field_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--text-field"):
        make(tmp_path / "t.csv", fields=())


def test_parse_label_words():
    assert parse_label_words("0=negative,1=positive") == {"0": "negative", "1": "positive"}
    assert parse_label_words(" neg , pos ") == {"neg": "neg", "pos": "pos"}
    assert parse_label_words("a = yes,, b=no ,") == {"a": "yes", "b": "no"}
    assert list(parse_label_words("2=c,0=a,1=b")) == ["2", "0", "1"]  # order kept


@pytest.mark.parametrize("spec", ["", "0=negative", ",,", "x=a,x=b"])
def test_parse_label_words_needs_two_labels(spec):
    with pytest.raises(ConfigError, match="--labels"):
        parse_label_words(spec)


@pytest.mark.parametrize("spec", ["1=good,2=good", "a=yes,b=no,c=yes"])
def test_two_labels_with_one_word_are_refused(spec):
    with pytest.raises(ConfigError, match="given to two labels"):
        parse_label_words(spec)


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("review: {} verdict:", "positional field {}"),
        ("review: {0} verdict:", "positional field {0}"),
        ("review: {sentence verdict:", "unmatched '{'"),
        ("review: sentence} verdict:", "Single '}'"),
    ],
)
def test_template_typos_are_one_line(tmp_path, template, needle):
    path = write_csv(tmp_path / "t.csv", ROWS)
    with pytest.raises(ConfigError, match=re.escape(needle)) as err:
        make(path, template=template)
    assert "\n" not in str(err.value) and template in str(err.value)


def test_files_with_a_byte_order_mark_are_read(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("\ufeffsentence,label\na great movie,1\nan awful movie,0\n", encoding="utf-8")
    assert [e.fields["sentence"] for e in make(csv_path).load("train")] == ["a great movie", "an awful movie"]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(
        '\ufeff{"sentence": "great", "label": "1"}\n{"sentence": "awful", "label": "0"}\n', encoding="utf-8"
    )
    assert [e.target for e in make(jsonl).load("train")] == ["1", "0"]


def test_an_empty_input_is_refused_with_file_and_line(tmp_path):
    path = write_csv(tmp_path / "t.csv", [("a great movie", "1"), ("  ", "0")])
    with pytest.raises(DataError) as err:
        make(path, template="{sentence}").load("train")
    assert "empty input" in assert_one_line_at(err, path, 3)
