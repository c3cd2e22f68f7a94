"""tasks/readers.py: delimited and JSON-lines files, the IMDB archive, seeded splits."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from softprompt.errors import DataError
from softprompt.tasks.readers import (
    data_file,
    data_root,
    read_delimited,
    read_imdb,
    read_json,
    read_jsonl,
    read_rows,
    seeded_split,
)


def test_glue_tsv_is_read_unquoted(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\nhe said \"hi\t1\nit's fine\t0\n")
    rows = list(read_delimited(path))
    assert rows == [(2, {"sentence": 'he said "hi', "label": "1"}), (3, {"sentence": "it's fine", "label": "0"})]


def test_gzipped_tsv(tmp_path):
    path = tmp_path / "train.tsv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("a\tb\n1\t2\n")
    assert list(read_delimited(path)) == [(2, {"a": "1", "b": "2"})]
    assert list(read_rows(path)) == [(2, {"a": "1", "b": "2"})]


def test_multiline_quoted_csv_reports_physical_lines(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"two\nlines",1\nbad\n')
    rows = read_rows(path)
    assert next(rows) == (3, {"text": "two\nlines", "label": "1"})
    with pytest.raises(DataError, match=f"{path}:4: expected 2 fields"):
        next(rows)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,label\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="unreadable"):
        list(read_rows(path))
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a": 1}\n\xff\n')
    with pytest.raises(DataError, match="unreadable as UTF-8"):
        list(read_rows(path))


def test_jsonl_gz_and_ndjson(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"a": 1}\n\n{"a": 2}\n')
    assert list(read_rows(path)) == [(1, {"a": 1}), (3, {"a": 2})]
    nd = tmp_path / "t.ndjson"
    nd.write_text('{"a": 3}\n')
    assert list(read_jsonl(nd)) == [(1, {"a": 3})]


def test_read_json(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"data": [1, 2]}')
    assert read_json(path) == {"data": [1, 2]}
    path.write_text('{\n"data": [1, 2\n')
    with pytest.raises(DataError, match=f"{path}:3: invalid JSON"):
        read_json(path)


def test_data_root_from_environment(tmp_path, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network in tests")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOFTPROMPT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n")
    assert data_file("SST-2", "dev.tsv") == tmp_path / "SST-2" / "dev.tsv"
    with pytest.raises(DataError, match="SST-2/train.tsv not found in any data source"):
        data_file("SST-2", "train.tsv")


# -- IMDB archive -----------------------------------------------------------------------------


def make_imdb(path, members: dict[str, str]):
    with tarfile.open(path, "w:gz") as tar:
        dirinfo = tarfile.TarInfo("aclImdb/test")
        dirinfo.type = tarfile.DIRTYPE
        tar.addfile(dirinfo)
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def imdb(tmp_path):
    return make_imdb(
        tmp_path / "aclImdb.tar.gz",
        {
            "aclImdb/test/pos/0_9.txt": "A great movie.<br />Loved it.",
            "aclImdb/test/neg/1_2.txt": "  Awful. ",
            "aclImdb/test/pos/2_8.txt": "Great!",
            "aclImdb/train/pos/3_10.txt": "train pos",
            "aclImdb/train/neg/4_1.txt": "train neg",
            "aclImdb/val/neg/5_3.txt": "val neg",
            "aclImdb/train/unsup/6_0.txt": "no label",
            "aclImdb/README": "readme",
            "aclImdb/test/urls_pos.txt": "http://x",
        },
    )


def test_read_imdb_test_split(imdb):
    reviews = read_imdb(imdb, "test")
    assert reviews == [
        ("Awful.", "neg", "aclImdb/test/neg/1_2.txt"),
        ("A great movie. Loved it.", "pos", "aclImdb/test/pos/0_9.txt"),
        ("Great!", "pos", "aclImdb/test/pos/2_8.txt"),
    ]


def test_read_imdb_train_reads_train_and_val_but_not_unsup(imdb):
    reviews = read_imdb(imdb, "train")
    assert [(text, label) for text, label, _ in reviews] == [
        ("train neg", "neg"),
        ("train pos", "pos"),
        ("val neg", "neg"),
    ]


def test_read_imdb_bad_archive(tmp_path):
    bad = tmp_path / "aclImdb.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="cannot read archive"):
        read_imdb(bad, "test")
    with pytest.raises(DataError, match="cannot read archive"):
        read_imdb(tmp_path / "missing.tar.gz", "test")


# -- seeded split ----------------------------------------------------------------------------------


def test_seeded_split_is_fixed_disjoint_and_complete():
    items = [f"item{i}" for i in range(101)]
    train, held = seeded_split(items, 0.2, seed=7)
    assert (train, held) == seeded_split(items, 0.2, seed=7)
    assert len(held) == 20 and len(train) == 81
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(items)
    assert train == sorted(train, key=items.index) and held == sorted(held, key=items.index)  # file order kept
    assert seeded_split(items, 0.2, seed=8)[1] != held


def test_seeded_split_edges():
    assert seeded_split([], 0.5) == ([], [])
    assert seeded_split([1, 2, 3], 0.0) == ([1, 2, 3], [])
    assert seeded_split([1, 2, 3], 1.0) == ([], [1, 2, 3])
