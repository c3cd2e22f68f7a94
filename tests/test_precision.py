"""models/precision.py: `--precision auto` decides from measured matmul rates (bf16 only
where native and clearly faster), measures once per process and device, explains itself in
one line, and the bf16 and fp32 paths of a tiny model agree within bf16 tolerance."""

from __future__ import annotations

import logging

import pytest
import torch

from helpers import tiny_llama, tiny_llama_folder, toy_task
from softprompt import PromptedLM
from softprompt.batching import Encoder
from softprompt.errors import ModelError
from softprompt.models import loading, precision
from softprompt.models.precision import PrecisionChoice, Rates, choose, decide, describe


@pytest.fixture
def fake_rates(monkeypatch):
    """Replace the probe's measurement with fixed rates; count the calls."""
    calls = []

    def measure(device, *args, **kwargs):
        calls.append(str(device))
        return Rates(fp32=260.0, bf16=146.0, size=512, seconds=0.03)

    precision.clear_cache()
    monkeypatch.setattr(precision, "measure", measure)
    monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": ("avx512_bf16", "avx512f"))
    yield calls
    precision.clear_cache()


# -- the decision on stubbed rates ---------------------------------------------------------


def test_amx_like_rates_pick_bf16():
    dtype, reason = decide(290.0, 1240.0, True)
    assert dtype == torch.bfloat16 and reason == "bf16 is 4.3x faster here"


def test_avx512_bf16_like_rates_pick_fp32():
    dtype, reason = decide(260.0, 146.0, True)
    assert dtype == torch.float32 and reason == "bf16 is not faster here"


def test_no_native_bf16_picks_fp32_whatever_the_rates():
    assert decide(100.0, 500.0, False)[0] == torch.float32
    assert decide(100.0, 500.0, False)[1] == "no native bf16 on this CPU"


def test_roughly_equal_rates_pick_fp32():
    dtype, reason = decide(260.0, 300.0, True)
    assert dtype == torch.float32 and "1.15x" in reason and "1.3x" in reason
    assert decide(260.0, 260.0 * precision.MARGIN, True)[0] == torch.bfloat16  # the margin itself is enough


def test_unknown_support_lets_the_rates_decide():
    assert decide(100.0, 400.0, None)[0] == torch.bfloat16
    assert decide(100.0, 90.0, None)[0] == torch.float32


def test_cuda_follows_bf16_support_not_rates():
    assert decide(50_000.0, 40_000.0, True, "cuda") == (torch.bfloat16, "bf16 is supported on this GPU")
    assert decide(10_000.0, 90_000.0, False, "cuda") == (torch.float32, "this GPU has no bf16 support")


# -- choose / probe cache / describe --------------------------------------------------------


def test_probe_is_cached_per_process_and_device(fake_rates):
    first = choose("auto", "cpu")
    second = choose("auto", torch.device("cpu"))
    assert fake_rates == ["cpu"]  # measured once
    assert first == second and first.dtype == torch.float32
    assert (first.fp32_gflops, first.bf16_gflops) == (260.0, 146.0)
    assert precision.probe("cpu") is precision.probe("cpu")


def test_the_real_probe_is_short_and_positive():
    rates = precision.measure(torch.device("cpu"), size=128, rounds=2, reps=1)
    assert rates.fp32 > 0 and rates.bf16 > 0 and rates.size == 128 and rates.seconds < 5


def test_explicit_precisions_do_not_measure(fake_rates):
    assert choose("fp32", "cpu").dtype == torch.float32
    bf16 = choose("bf16", "cpu")
    assert bf16.dtype == torch.bfloat16 and bf16.reason == "requested" and bf16.fp32_gflops is None
    assert fake_rates == []


def test_a_bad_precision_is_a_one_line_model_error():
    with pytest.raises(ModelError, match=r"^--precision 'fp16': expected auto, bf16 or fp32$"):
        choose("fp16", "cpu")
    with pytest.raises(ModelError, match="expected auto, bf16 or fp32"):
        loading.resolve_dtype("half", torch.device("cpu"))


def test_describe_says_what_and_why(fake_rates):
    assert describe(choose("auto", "cpu")) == (
        "precision auto -> fp32 on cpu: bf16 matmul 146 GFLOP/s vs fp32 260 GFLOP/s (avx512_bf16; bf16 is not faster here)"
    )
    assert describe(choose("bf16", "cpu")) == "precision bf16 -> bf16 on cpu (avx512_bf16; requested)"
    gpu = PrecisionChoice("auto", torch.bfloat16, "cuda:0", "bf16 is supported on this GPU", 50_000.0, 400_000.0)
    assert describe(gpu) == (
        "precision auto -> bf16 on cuda:0: bf16 matmul 400000 GFLOP/s vs fp32 50000 GFLOP/s (bf16 is supported on this GPU)"
    )


def test_report_lists_versions_flags_threads_rates_and_the_pick(fake_rates):
    text = precision.report("cpu")
    assert f"torch {torch.__version__}" in text
    assert "cpu flags: avx512_bf16 avx512f" in text
    assert f"threads {torch.get_num_threads()}" in text
    assert "fp32 260 GFLOP/s, bf16 146 GFLOP/s" in text
    assert "--precision auto -> fp32: bf16 is not faster here" in text.splitlines()
    assert text.splitlines()[-1].startswith("attention auto -> ")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f amx_tile amx_bf16 avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu sse avx2 avx512f amx_tile amx_bf16 avx512_bf16\n"
    )
    assert precision.cpu_flags(str(info)) == ("amx_bf16", "amx_tile", "avx2", "avx512_bf16", "avx512f")
    assert precision.cpu_flags(str(tmp_path / "missing")) is None
    assert precision.bf16_supported(torch.device("cpu"), ("avx2",)) is False
    assert precision.bf16_supported(torch.device("cpu"), ("avx512_bf16",)) is True


def test_load_model_records_and_logs_the_choice(fake_rates, tmp_path, caplog):
    tiny_llama_folder(tmp_path / "m")
    with caplog.at_level(logging.INFO, logger="softprompt.models.loading"):
        loaded = loading.load_model(str(tmp_path / "m"), precision="auto", device="cpu")
    assert loaded.dtype == torch.float32 and loaded.precision is not None
    assert loaded.precision.reason == "bf16 is not faster here"
    assert describe(loaded.precision) in caplog.text
    assert loading.bf16_is_fast(torch.device("cpu")) is False and fake_rates == ["cpu"]


# -- bf16 and fp32 compute the same numbers, within bf16 tolerance -----------------------------


INPUTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
CANDIDATES = [[[45], [46, 47, 48]], [[46], [45], [49, 50, 51, 52]], [[49, 50], [5]]]


@pytest.mark.parametrize("fast", [True, False])
def test_bf16_and_fp32_models_agree(fast):
    fp32, bf16 = tiny_llama(dtype=torch.float32), tiny_llama(dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.identity.fingerprint == fp32.identity.fingerprint
    prompt = torch.randn(4, fp32.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.3

    scores = {}
    for name, lm in (("fp32", fp32), ("bf16", bf16)):
        scores[name] = [[s for s, _ in row] for row in PromptedLM(lm, fast=fast).score(prompt, INPUTS, CANDIDATES)]
    for a, b in zip(scores["fp32"], scores["bf16"]):
        # Sum log-probs of 1-4 tokens, each about -4: bf16 (8-bit mantissa) moves them by ~1e-3
        # on this model; 2e-2 leaves room for other kernels while still catching a wrong path.
        assert b == pytest.approx(a, abs=2e-2)
        assert a.index(max(a)) == b.index(max(b))  # the same prediction (the closest pair differs by 0.045)

    task = toy_task()
    enc = Encoder(fp32.tokenizer, False)
    batch = enc.collate([enc.encode(task, e) for e in task.load("train")[:6]])
    losses = {}
    for name, lm in (("fp32", fp32), ("bf16", bf16)):
        param = torch.nn.Parameter(prompt.clone())
        loss = PromptedLM(lm, fast=fast).loss(param, batch)
        loss.backward()
        losses[name] = (loss.item(), param.grad)
    assert losses["bf16"][0] == pytest.approx(losses["fp32"][0], rel=1e-2)
    assert losses["bf16"][1].dtype == torch.float32  # the prompt trains in fp32 either way
    assert (losses["bf16"][1] - losses["fp32"][1]).norm() <= 0.1 * losses["fp32"][1].norm()
