"""models/attention.py: "auto" picks the attention kernel from a measured forward + backward
(eager only where clearly faster, sdpa on CUDA), measures once per key, and the two kernels
compute the same scores."""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_llama_folder
from softprompt import PromptedLM
from softprompt.errors import ModelError
from softprompt.models import attention, loading, precision


@pytest.fixture
def fake_times(monkeypatch):
    """Replace the measurement with fixed times (sdpa 30 ms, eager 10 ms); count the calls."""
    calls = []

    def measure(device, dtype, heads=9, head_dim=64, **kwargs):
        calls.append((str(device), dtype, heads, head_dim))
        return 0.030, 0.010

    attention._TIMES.clear()
    monkeypatch.setattr(attention, "measure", measure)
    yield calls
    attention._TIMES.clear()


def test_eager_is_picked_only_when_clearly_faster():
    assert attention.decide(0.030, 0.010, "cpu")[0] == "eager"
    assert attention.decide(0.011, 0.010, "cpu") == (
        "sdpa",
        "matmul attention is only 1.10x sdpa's speed here (eager needs 1.15x)",
    )
    assert attention.decide(0.010, 0.020, "cpu")[0] == "sdpa"
    assert attention.decide(0.030, 0.010, "cuda") == ("sdpa", "fused kernels on CUDA")


def test_auto_measures_once_per_device_dtype_and_shape(fake_times):
    first = attention.choose("auto", "cpu", torch.bfloat16, 9, 64)
    again = attention.choose("auto", "cpu", torch.bfloat16, 9, 64)
    other = attention.choose("auto", "cpu", torch.float32, 9, 64)
    assert first == again and first.implementation == "eager" and other.implementation == "eager"
    assert fake_times == [("cpu", torch.bfloat16, 9, 64), ("cpu", torch.float32, 9, 64)]
    assert attention.describe(first) == (
        "attention auto -> eager: fwd+bwd sdpa 30.0 ms vs eager 10.0 ms "
        "(matmul attention is 3.00x faster than sdpa here)"
    )


def test_explicit_choices_do_not_measure_and_bad_ones_are_one_line_errors(fake_times):
    assert attention.choose("sdpa", "cpu", torch.float32).implementation == "sdpa"
    assert attention.choose("eager", "cpu", torch.float32).reason == "requested"
    assert fake_times == []
    with pytest.raises(ModelError, match="expected auto, sdpa or eager"):
        attention.choose("flash", "cpu", torch.float32)


def test_the_real_probe_times_both_forms():
    sdpa_s, eager_s = attention.measure(torch.device("cpu"), torch.float32, heads=2, head_dim=8, batch=2, queries=8)
    assert 0 < sdpa_s < 5 and 0 < eager_s < 5


def test_the_two_forms_compute_the_same_attention():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=gen) for n in (5, 9, 9))
    allowed = torch.ones(5, 9, dtype=torch.bool).tril(4)
    mask = torch.zeros(5, 9).masked_fill(~allowed, torch.finfo(torch.float32).min)
    torch.testing.assert_close(attention.eager_attention(q, k, v, mask), attention.sdpa_attention(q, k, v, mask))


def test_load_model_runs_the_chosen_kernel_and_scores_do_not_change(fake_times, monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "cpu_flags", lambda path="/proc/cpuinfo": ())  # fp32 without probing
    tiny_llama_folder(tmp_path / "m")
    loaded = {
        choice: loading.load_model(str(tmp_path / "m"), precision="auto", device="cpu", attention=choice)
        for choice in ("auto", "sdpa")
    }
    assert loaded["auto"].attention.implementation == "eager"  # the stubbed probe: eager 3x faster
    assert loaded["auto"].model.config._attn_implementation == "eager"
    assert loaded["sdpa"].model.config._attn_implementation == "sdpa"
    prompt = torch.randn(3, loaded["auto"].hidden_size, generator=torch.Generator().manual_seed(2)) * 0.3
    inputs, candidates = [[5, 6, 7], [8, 9, 10, 11]], [[[45], [46, 47]], [[49], [50]]]
    scores = {c: PromptedLM(m).score(prompt, inputs, candidates) for c, m in loaded.items()}
    for a, b in zip(scores["auto"], scores["sdpa"]):
        assert [s for s, _ in a] == pytest.approx([s for s, _ in b], abs=1e-4)
