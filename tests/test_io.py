"""io.py: prompt folders (safetensors + JSON), atomic writes, model checks, PEFT interop."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from helpers import tiny_llama, tiny_t5
from softprompt import io as sp_io
from softprompt.prepend import prepend_prompt
from softprompt.errors import ConfigError, ModelError
from softprompt.io import SavedPrompt, export_peft, import_peft, load_prompt, save_prompt
from softprompt.scoring import PromptedLM


@pytest.fixture
def peft():
    """The PEFT library, for the tests that compare with it (they alone skip without it)."""
    return pytest.importorskip("peft")


TASK = {"name": "toy", "template": "sst2 sentence: {sentence}", "verbalizer": {"neg": "negative", "pos": "positive"}}
IDS = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0], [13, 0, 0, 0, 0]])
MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])


def make_saved(lm, length: int = 4, seed: int = 0) -> SavedPrompt:
    weight = torch.randn(length, lm.hidden_size, generator=torch.Generator().manual_seed(seed)) * 0.5
    return SavedPrompt(
        weight=weight,
        model=lm.identity,
        task=dict(TASK),
        init="labels",
        training={"steps": 7, "lr": 0.3, "optimizer": "adafactor"},
        metrics={"accuracy": 0.75, "step": 7},
    )


def folder_bytes(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def plain_logits(lm, prompt: torch.Tensor, ids=IDS, mask=MASK) -> torch.Tensor:
    """(B, T, V) logits over the input positions, softprompt's plain path."""
    embeds, full_mask, _ = prepend_prompt(prompt, lm.embed(ids), mask)
    return lm.model(inputs_embeds=embeds, attention_mask=full_mask).logits[:, prompt.shape[0] :]


# -- save / load -----------------------------------------------------------------------------


def test_round_trip_keeps_weights_identity_and_metadata(llama, tmp_path):
    saved = make_saved(llama)
    saved.extra = {"note": "kept"}
    out = save_prompt(tmp_path / "p", saved)
    assert out == tmp_path / "p"
    assert sorted(p.name for p in out.iterdir()) == ["prompt.json", "prompt.safetensors"]
    back = load_prompt(out)
    assert torch.equal(back.weight, saved.weight) and back.weight.dtype == torch.float32
    assert back.model == llama.identity
    assert back.task == TASK and back.init == "labels"
    assert back.training == saved.training and back.metrics == saved.metrics
    assert back.extra == {"note": "kept"}
    meta = json.loads((out / "prompt.json").read_text())
    assert meta["model"] == llama.identity.to_dict()
    assert (meta["prompt_length"], meta["hidden_size"], meta["format_version"]) == (4, 32, 1)
    assert list(load_file(out / "prompt.safetensors")) == ["prompt"]


def test_bf16_weights_are_stored_as_fp32(llama, tmp_path):
    saved = make_saved(llama)
    saved.weight = saved.weight.to(torch.bfloat16)
    save_prompt(tmp_path / "p", saved)
    stored = load_file(tmp_path / "p" / "prompt.safetensors")["prompt"]
    assert stored.dtype == torch.float32
    assert torch.equal(stored, saved.weight.float())


def test_save_replaces_the_whole_folder(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama, seed=0))
    (tmp_path / "p" / "stale.txt").write_text("old")
    new = make_saved(llama, length=6, seed=1)
    save_prompt(tmp_path / "p", new)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["prompt.json", "prompt.safetensors"]
    assert torch.equal(load_prompt(tmp_path / "p").weight, new.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temporary or old sibling left


@pytest.mark.parametrize("fail_in", ["save_file", "write_json"])
def test_failed_write_leaves_existing_prompt_untouched(llama, tmp_path, monkeypatch, fail_in):
    target = save_prompt(tmp_path / "p", make_saved(llama, seed=0))
    before = folder_bytes(target)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sp_io, fail_in, boom)
    with pytest.raises(OSError, match="disk full"):
        save_prompt(target, make_saved(llama, seed=1))
    assert folder_bytes(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_failed_first_write_leaves_nothing(llama, tmp_path, monkeypatch):
    monkeypatch.setattr(sp_io, "save_file", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        save_prompt(tmp_path / "p", make_saved(llama))
    assert list(tmp_path.iterdir()) == []


def test_a_crash_between_the_two_renames_loses_nothing(llama, tmp_path, monkeypatch):
    """Killed after the old folder moved aside and before the new one moved in: the next
    load puts the last complete version back, and the next save still works."""
    first = make_saved(llama, seed=0)
    save_prompt(tmp_path / "p", first)
    real_replace = sp_io.os.replace

    def crash_moving_in(src, dst):
        if str(dst) == str(tmp_path / "p"):
            raise KeyboardInterrupt  # stands for the kill
        real_replace(src, dst)

    monkeypatch.setattr(sp_io.os, "replace", crash_moving_in)
    with pytest.raises(KeyboardInterrupt):
        save_prompt(tmp_path / "p", make_saved(llama, seed=1))
    monkeypatch.setattr(sp_io.os, "replace", real_replace)
    assert not (tmp_path / "p").exists() and any(p.name.startswith(".p.old-") for p in tmp_path.iterdir())
    assert torch.equal(load_prompt(tmp_path / "p").weight, first.weight)
    second = make_saved(llama, seed=2)
    save_prompt(tmp_path / "p", second)
    assert torch.equal(load_prompt(tmp_path / "p").weight, second.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_a_stale_old_folder_does_not_block_saving(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama, seed=0))
    for name in (".p.old-12345", f".p.old-{__import__('os').getpid()}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "prompt.json").write_text("{}")
    new = make_saved(llama, seed=1)
    save_prompt(tmp_path / "p", new)
    assert torch.equal(load_prompt(tmp_path / "p").weight, new.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def test_write_json_replaces_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "result.json"
    sp_io.write_json(path, {"a": 1})
    monkeypatch.setattr(sp_io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        sp_io.write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def _strict(text):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_reports_are_strict_json_and_state_files_keep_infinities(tmp_path):
    report = {"r": float("nan"), "rows": [{"p": float("inf"), "q": 0.5}, (float("-inf"), 1)], "n": 3, "s": "nan"}
    sp_io.write_report_json(tmp_path / "table.json", report)
    assert _strict((tmp_path / "table.json").read_text()) == {
        "r": None, "rows": [{"p": None, "q": 0.5}, [None, 1]], "n": 3, "s": "nan"
    }  # fmt: skip
    sp_io.write_json(tmp_path / "trainer.json", {"best_score": float("-inf")})  # a checkpoint before any evaluation
    assert sp_io.read_json(tmp_path / "trainer.json")["best_score"] == float("-inf")


def _tamper(folder, **changes):
    meta = json.loads((folder / "prompt.json").read_text())
    meta.update(changes)
    (folder / "prompt.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"task": ["not", "a", "dict"]}, "'task' must be a JSON object"),
        ({"metrics": 3}, "'metrics' must be a JSON object"),
        ({"model": "tiny"}, "malformed 'model'"),
        ({"prompt_length": 9}, "prompt_length 9"),
        ({"hidden_size": 64}, "hidden_size 64"),
    ],
)
def test_a_tampered_prompt_json_is_one_line(llama, tmp_path, change, needle):
    save_prompt(tmp_path / "p", make_saved(llama))
    _tamper(tmp_path / "p", **change)
    with pytest.raises(ConfigError, match=needle) as err:
        load_prompt(tmp_path / "p")
    assert "\n" not in str(err.value)


def test_non_utf8_or_non_object_prompt_json_is_one_line(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama))
    (tmp_path / "p/prompt.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_prompt(tmp_path / "p")
    (tmp_path / "p/prompt.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_prompt(tmp_path / "p")


def test_a_byte_order_mark_is_read(llama, tmp_path):
    saved = make_saved(llama)
    save_prompt(tmp_path / "p", saved)
    text = (tmp_path / "p/prompt.json").read_text()
    (tmp_path / "p/prompt.json").write_text("\ufeff" + text, encoding="utf-8")
    assert torch.equal(load_prompt(tmp_path / "p").weight, saved.weight)


@pytest.mark.parametrize(
    ("weight", "needle"),
    [
        (torch.full((4, 32), float("nan")), "non-finite"),
        (torch.tensor([[1.0] * 32, [float("inf")] * 32]), "non-finite"),
        (torch.zeros(0, 32), "at least 1"),
        (torch.zeros(4, 16), "width 16"),
    ],
)
def test_bad_prompt_tensors_are_refused(llama, tmp_path, weight, needle):
    save_prompt(tmp_path / "p", make_saved(llama))
    save_file({"prompt": weight}, tmp_path / "p/prompt.safetensors")
    meta = json.loads((tmp_path / "p/prompt.json").read_text())
    meta.update(prompt_length=weight.shape[0], hidden_size=weight.shape[1])
    (tmp_path / "p/prompt.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=needle) as err:
        load_prompt(tmp_path / "p")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("tokens", ["4", 2.5, 0, 99, True])
def test_peft_adapter_with_bad_num_virtual_tokens_is_one_line(llama, tmp_path, tokens):
    export_peft(make_saved(llama), tmp_path / "a")
    config = json.loads((tmp_path / "a/adapter_config.json").read_text())
    config["num_virtual_tokens"] = tokens
    (tmp_path / "a/adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="num_virtual_tokens") as err:
        import_peft(tmp_path / "a")
    assert "\n" not in str(err.value)


# -- model checks ------------------------------------------------------------------------------


def test_prompt_fits_the_model_it_was_saved_for(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama))
    llama.identity.check_compatible(load_prompt(tmp_path / "p").model, "p")
    # The fingerprint rounds to bf16, so the same model loaded in bf16 accepts it too.
    tiny_llama(dtype=torch.bfloat16).identity.check_compatible(load_prompt(tmp_path / "p").model, "p")


def test_other_embeddings_are_refused_with_one_line(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama))
    other = tiny_llama(seed=1)
    assert other.identity.fingerprint != llama.identity.fingerprint
    with pytest.raises(ModelError) as err:
        other.identity.check_compatible(load_prompt(tmp_path / "p").model, str(tmp_path / "p"))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / "p") in msg and "different embeddings" in msg
    assert llama.identity.fingerprint in msg and other.identity.fingerprint in msg


def test_other_hidden_size_is_refused_with_one_line(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama))
    wide = tiny_llama(hidden_size=64)
    with pytest.raises(ModelError) as err:
        wide.identity.check_compatible(load_prompt(tmp_path / "p").model, "p")
    assert "\n" not in str(err.value)
    assert "hidden size 32" in str(err.value) and "hidden size 64" in str(err.value)


# -- malformed folders ---------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match="prompt folder not found"):
        load_prompt(tmp_path / "nope")


def test_malformed_prompt_json_names_the_file(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama))
    (tmp_path / "p" / "prompt.json").write_text('{\n  "model": {\n  oops\n}')
    with pytest.raises(ConfigError) as err:
        load_prompt(tmp_path / "p")
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'p' / 'prompt.json'}:3:")
    assert "invalid JSON" in msg and "\n" not in msg


def test_prompt_json_without_model_names_the_file(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama))
    (tmp_path / "p" / "prompt.json").write_text(json.dumps({"task": TASK}))
    with pytest.raises(ConfigError, match="prompt.json: missing or malformed 'model'"):
        load_prompt(tmp_path / "p")


def test_unreadable_or_wrong_safetensors(llama, tmp_path):
    save_prompt(tmp_path / "p", make_saved(llama))
    weights = tmp_path / "p" / "prompt.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_prompt(tmp_path / "p")
    save_file({"other": torch.zeros(2, 2)}, weights)
    with pytest.raises(ConfigError, match="no tensor named 'prompt'"):
        load_prompt(tmp_path / "p")
    save_file({"prompt": torch.zeros(2, 2, 2)}, weights)
    with pytest.raises(ConfigError, match=r"must be \(length, hidden\)"):
        load_prompt(tmp_path / "p")
    weights.unlink()
    with pytest.raises(ConfigError, match="prompt.safetensors: file not found"):
        load_prompt(tmp_path / "p")


# -- PEFT interop ----------------------------------------------------------------------------------


def peft_model(peft, model, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return peft.PeftModel.from_pretrained(model, str(path))


def test_export_writes_a_peft_adapter(llama, tmp_path):
    saved = make_saved(llama)
    export_peft(saved, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["task_type"] == "CAUSAL_LM"
    assert (config["num_virtual_tokens"], config["token_dim"]) == (4, 32)
    assert torch.equal(load_file(tmp_path / "a" / "adapter_model.safetensors")["prompt_embeddings"], saved.weight)
    back = import_peft(tmp_path / "a")  # prompt.json beside it keeps the identity
    assert back.model == llama.identity and torch.equal(back.weight, saved.weight)
    assert back.task == TASK


def test_exported_adapter_gives_peft_the_same_logits(llama, tmp_path, peft):
    saved = make_saved(llama)
    export_peft(saved, tmp_path / "a")
    with torch.no_grad():
        ours = plain_logits(llama, saved.weight)  # (B, T, V)
        model = peft_model(peft, tiny_llama().model, tmp_path / "a")
        theirs = model(input_ids=IDS, attention_mask=MASK).logits  # (B, P+T, V)
    assert theirs.shape == (3, 4 + 5, ours.shape[-1])
    theirs = theirs[:, 4:]
    real = MASK.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)
    assert torch.equal(ours[real].argmax(-1), theirs[real].argmax(-1))
    # The prompt matters: without it the logits differ.
    bare = llama.model(input_ids=IDS, attention_mask=MASK).logits
    assert not torch.allclose(bare[real], theirs[real], atol=1e-3)


def test_peft_prompt_imports_with_the_same_scores(llama, tmp_path, peft):
    base = tiny_llama()
    cfg = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(base.model, cfg)
    model.save_pretrained(str(tmp_path / "a"))
    imported = import_peft(tmp_path / "a", llama.identity)
    assert imported.model == llama.identity and imported.init == "peft"
    assert torch.equal(imported.weight, model.get_prompt_embedding_to_save("default").float())
    inputs, cands = [[5, 6, 7], [8, 9, 10, 11, 12], [13]], [[45], [46], [47, 48]]
    ours = PromptedLM(llama, fast=True).score(imported.weight, inputs, [cands] * len(inputs))
    with torch.no_grad():
        for inp, row in zip(inputs, ours):
            for cand, (total, _) in zip(cands, row):
                logp = F.log_softmax(model(input_ids=torch.tensor([inp + cand])).logits[0].float(), -1)
                start = 4 + len(inp) - 1
                expected = sum(logp[start + j, t].item() for j, t in enumerate(cand))
                assert total == pytest.approx(expected, abs=1e-4)
    # load_prompt recognises a bare PEFT folder; without a model its identity is unknown.
    assert load_prompt(tmp_path / "a").model.fingerprint == "unknown"


def _bare_peft_folder(path, width: int, peft_type: str = "PROMPT_TUNING"):
    save_file({"prompt_embeddings": torch.zeros(4, width)}, path / "adapter_model.safetensors")
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "num_virtual_tokens": 4}))


def test_peft_prompt_of_another_width_is_refused(llama, tmp_path):
    _bare_peft_folder(tmp_path, width=16)
    with pytest.raises(ModelError) as err:
        import_peft(tmp_path, llama.identity)
    assert "width 16" in str(err.value) and "hidden size 32" in str(err.value)


def test_peft_adapter_of_another_type_is_refused(llama, tmp_path):
    _bare_peft_folder(tmp_path, width=32, peft_type="LORA")
    with pytest.raises(ConfigError, match="peft_type is 'LORA', expected 'PROMPT_TUNING'"):
        import_peft(tmp_path, llama.identity)


def test_bare_peft_prompt_adopts_the_identity_it_is_given(llama, tmp_path):
    _bare_peft_folder(tmp_path, width=32)
    assert import_peft(tmp_path).model.fingerprint == "unknown"
    assert import_peft(tmp_path, llama.identity).model == llama.identity


def test_t5_export_gives_peft_the_same_logits(t5, tmp_path, peft):
    saved = make_saved(t5)
    export_peft(saved, tmp_path / "a", task_type="SEQ_2_SEQ_LM")
    labels = torch.tensor([[45, 1], [46, 1], [47, 1]])
    with torch.no_grad():
        embeds, mask, _ = prepend_prompt(saved.weight, t5.embed(IDS), MASK)
        ours = t5.model(inputs_embeds=embeds, attention_mask=mask, labels=labels).logits
        theirs = peft_model(peft, tiny_t5().model, tmp_path / "a")(
            input_ids=IDS, attention_mask=MASK, labels=labels
        ).logits
    assert theirs.shape == ours.shape
    assert torch.allclose(ours, theirs, atol=1e-5)
