"""scoring/: every backend (fast: shared prompt KV cache, head only where needed; plain: prepend
+ full forward; seq2seq: T5) matches references computed one example at a time without padding
or caching, and the fast and plain backends agree with each other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import WORDS, learnable_llama, tiny_llama, tiny_t5, toy_task, with_bos
from softprompt.batching import Encoded, Encoder
from softprompt.prepend import prepend_prompt
from softprompt.models.loading import LoadedModel
from softprompt.scoring import PreparedPrompt, PromptedLM
from softprompt.scoring.kv_cache import cat_caches, expand_cache, layer_tensors, pad_cache, select_cache
from softprompt.tasks.base import Example

# Inputs of different lengths (1, 3, 6 tokens); per input, single- and multi-token candidates,
# a different number of candidates per input.
INPUTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14]]
CANDIDATES = [
    [[45], [46, 47, 48]],
    [[46], [45], [49, 50, 51, 52]],
    [[49, 50], [5]],
]


def make_lm(kind: str, dtype=torch.float32) -> LoadedModel:
    # "tiny": the default init (logits within about ±1); "wide": untied head, init 0.2, so
    # scores and greedy choices differ clearly between tokens.
    return tiny_llama(dtype=dtype) if kind == "tiny" else learnable_llama(dtype=dtype)


def make_prompt_tensor(hidden: int, length: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(length, hidden, generator=torch.Generator().manual_seed(seed)) * 0.3


def toy_batch(lm: LoadedModel, n: int = 6):
    task = toy_task()
    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder)
    return enc.collate([enc.encode(task, e) for e in task.load("train")[:n]])


def loss_and_grad(plm: PromptedLM, prompt: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
    param = torch.nn.Parameter(prompt.clone())
    loss = plm.loss(param, batch)
    loss.backward()
    return loss.detach(), param.grad


@torch.no_grad()
def reference_scores(lm: LoadedModel, prompt, inputs, candidates) -> list[list[float]]:
    """Sum log-prob of each candidate, one unpadded causal-LM forward per (input, candidate)."""
    out = []
    for inp, cands in zip(inputs, candidates):
        row = []
        for cand in cands:
            ids = torch.tensor([inp + cand])
            embeds, mask, _ = prepend_prompt(prompt, lm.embed(ids), torch.ones_like(ids))
            logp = F.log_softmax(lm.model(inputs_embeds=embeds, attention_mask=mask).logits.float()[0], -1)
            start = prompt.shape[0] + len(inp) - 1  # position predicting the first candidate token
            row.append(sum(logp[start + j, t].item() for j, t in enumerate(cand)))
        out.append(row)
    return out


@torch.no_grad()
def reference_greedy(lm: LoadedModel, prompt, inputs, max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of each input, a full uncached forward per new token."""
    eos = lm.tokenizer.eos_token_id
    out = []
    for inp in inputs:
        ids = list(inp)
        new: list[int] = []
        for _ in range(max_new_tokens):
            t = torch.tensor([ids])
            embeds, mask, _ = prepend_prompt(prompt, lm.embed(t), torch.ones_like(t))
            token = lm.model(inputs_embeds=embeds, attention_mask=mask).logits[0, -1].float().argmax().item()
            if token == eos:
                break
            new.append(token)
            ids.append(token)
        out.append(new)
    return out


def toy_pairs(lm: LoadedModel, n: int = 6) -> list[tuple[list[int], list[int]]]:
    """(input ids, target ids) of the examples `toy_batch` collates."""
    task = toy_task()
    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder)
    return [(enc.input_ids(task.format(e)), enc.target_ids(task.target_text(e))) for e in task.load("train")[:n]]


def reference_loss(lm: LoadedModel, prompt, pairs) -> torch.Tensor:
    """Mean target-token cross-entropy, one unpadded causal-LM forward per example; differentiable."""
    total, count = torch.zeros(()), 0
    for inp, tgt in pairs:
        ids = torch.tensor([inp + tgt])
        embeds, mask, _ = prepend_prompt(prompt, lm.embed(ids), torch.ones_like(ids))
        logp = F.log_softmax(lm.model(inputs_embeds=embeds, attention_mask=mask).logits.float()[0], -1)
        start = prompt.shape[0] + len(inp) - 1  # position predicting the first target token
        total = total - sum(logp[start + j, t] for j, t in enumerate(tgt))
        count += len(tgt)
    return total / count


def totals(scores) -> list[list[float]]:
    return [[total for total, _ in row] for row in scores]


def flat(rows: list[list[float]]) -> list[float]:
    return [x for row in rows for x in row]


# -- decoder-only, fp32 -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tiny", "wide"])
def test_fast_and_plain_loss_and_gradient_agree(kind):
    lm = make_lm(kind)
    prompt, batch = make_prompt_tensor(lm.hidden_size), toy_batch(lm)
    assert batch.attention_mask.sum(1).unique().numel() > 1  # rows of different lengths
    fast_loss, fast_grad = loss_and_grad(PromptedLM(lm, fast=True), prompt, batch)
    plain_loss, plain_grad = loss_and_grad(PromptedLM(lm, fast=False), prompt, batch)
    assert torch.allclose(fast_loss, plain_loss, atol=1e-5)
    assert fast_grad.shape == prompt.shape
    assert fast_grad.abs().max() > 1e-4
    assert torch.allclose(fast_grad, plain_grad, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("kind", ["tiny", "wide"])
def test_loss_and_gradient_match_an_unpadded_reference(kind, fast):
    lm = make_lm(kind)
    prompt, batch = make_prompt_tensor(lm.hidden_size), toy_batch(lm)
    loss, grad = loss_and_grad(PromptedLM(lm, fast=fast), prompt, batch)
    param = torch.nn.Parameter(prompt.clone())
    expected = reference_loss(lm, param, toy_pairs(lm))
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert param.grad.abs().max() > 1e-4
    assert torch.allclose(grad, param.grad, atol=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_loss_is_mean_target_token_cross_entropy(fast):
    lm = make_lm("wide")
    prompt, batch = make_prompt_tensor(lm.hidden_size), toy_batch(lm)
    enc = Encoder(lm.tokenizer, False)
    task = toy_task()
    examples = task.load("train")[:6]
    logps, count = [], 0
    with torch.no_grad():
        for e in examples:
            inp, tgt = enc.input_ids(task.format(e)), enc.target_ids(task.target_text(e))
            logps.append(reference_scores(lm, prompt, [inp], [[tgt]])[0][0])
            count += len(tgt)
    expected = -sum(logps) / count
    assert PromptedLM(lm, fast=fast).loss(prompt, batch).item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("fast", [True, False])
def test_only_the_prompt_gets_a_gradient(llama, fast):
    assert not any(p.requires_grad for p in llama.model.parameters())
    prompt = torch.nn.Parameter(make_prompt_tensor(llama.hidden_size))
    PromptedLM(llama, fast=fast).loss(prompt, toy_batch(llama)).backward()
    assert prompt.grad is not None and prompt.grad.shape == (4, llama.hidden_size)
    assert all(p.grad is None for p in llama.model.parameters())


@pytest.mark.parametrize("kind", ["tiny", "wide"])
def test_candidate_scores_fast_plain_and_reference_agree(kind):
    lm = make_lm(kind)
    prompt = make_prompt_tensor(lm.hidden_size)
    fast = PromptedLM(lm, fast=True).score(prompt, INPUTS, CANDIDATES)
    plain = PromptedLM(lm, fast=False).score(prompt, INPUTS, CANDIDATES)
    ref = reference_scores(lm, prompt, INPUTS, CANDIDATES)
    for got in (fast, plain):
        assert [[n for _, n in row] for row in got] == [[len(c) for c in cands] for cands in CANDIDATES]
        for row, ref_row in zip(totals(got), ref):
            assert row == pytest.approx(ref_row, abs=1e-4)
    # The candidates really differ (the comparison is not between constants).
    assert len({round(s, 3) for row in ref for s in row}) == sum(len(c) for c in CANDIDATES)


def test_reused_prompt_cache_gives_the_same_scores(llama):
    plm = PromptedLM(llama, fast=True)
    prompt = make_prompt_tensor(llama.hidden_size)
    prepared = plm.prepare(prompt)
    assert prepared.cache is not None
    first = plm.score(prepared, INPUTS, CANDIDATES)
    second = plm.score(prepared, INPUTS[::-1], CANDIDATES[::-1])  # cache not consumed
    assert flat(totals(first)) == pytest.approx(flat(totals(plm.score(prompt, INPUTS, CANDIDATES))), abs=1e-6)
    assert flat(totals(second)[::-1]) == pytest.approx(flat(totals(first)), abs=1e-5)


@pytest.mark.parametrize("kind", ["fast", "plain", "t5"])
def test_a_prepared_prompt_gives_what_the_raw_prompt_gives(kind):
    lm = tiny_t5() if kind == "t5" else learnable_llama()
    plm = PromptedLM(lm, fast=kind == "fast")
    prompt = make_prompt_tensor(lm.hidden_size)
    prepared = plm.prepare(prompt)
    assert isinstance(prepared, PreparedPrompt) and prepared.weight is prompt
    assert (prepared.cache is not None) == (kind == "fast")
    for _ in range(2):  # a prepared prompt serves any number of calls
        assert plm.score(prepared, INPUTS, CANDIDATES) == plm.score(prompt, INPUTS, CANDIDATES)
        assert plm.generate(prepared, INPUTS, 5) == plm.generate(prompt, INPUTS, 5)
        rows = plm.score_rows([prepared, prompt], INPUTS[:2], CANDIDATES[:2])
        assert rows == plm.score(prompt, INPUTS[:2], CANDIDATES[:2])
    assert plm.generate_rows([prepared] * 3, INPUTS, 5) == plm.generate(prompt, INPUTS, 5)
    batch = toy_batch(lm)
    assert plm.loss(prepared, batch).item() == plm.loss(prompt, batch).item()


def test_kv_cache_helpers_move_the_right_rows_and_positions(llama):
    plm = PromptedLM(llama, fast=True)
    caches = [plm.prepare(make_prompt_tensor(llama.hidden_size, 3, seed)).cache for seed in (1, 2)]
    before = [[(k.clone(), v.clone()) for k, v, *_ in layer_tensors(c)] for c in caches]
    assert len(before[0]) == 2 and before[0][0][0].shape[0] == 1  # batch 1, 2 layers

    def kv(cache):  # per layer, (keys, values)
        return [(k, v) for k, v, *_ in layer_tensors(cache)]

    expanded = expand_cache(caches[0], 4, llama.model.config)
    stacked = select_cache(cat_caches(caches), torch.tensor([1, 0, 1]))
    padded = pad_cache(caches[1], 5)
    for (keys, values), (k, v) in zip(kv(expanded), before[0]):
        assert keys.shape[0] == 4 and all(torch.equal(keys[r], k[0]) for r in range(4))
        assert all(torch.equal(values[r], v[0]) for r in range(4))
    for r, source in enumerate([1, 0, 1]):
        for (k, v), (ref_k, ref_v) in zip(kv(stacked), before[source]):
            assert torch.equal(k[r], ref_k[0]) and torch.equal(v[r], ref_v[0])
    assert not torch.equal(before[0][0][0], before[1][0][0])  # the two prompts' caches differ
    for (keys, values), (k, v) in zip(kv(padded), before[1]):
        assert keys.shape[-2] == 5 and values.shape[-2] == 5
        assert torch.equal(keys[..., :3, :], k) and torch.equal(values[..., :3, :], v)
        assert not keys[..., 3:, :].any() and not values[..., 3:, :].any()
    # The helpers make new caches: the originals keep their rows and positions.
    for cache, layers in zip(caches, before):
        for (keys, values), (k, v) in zip(kv(cache), layers):
            assert torch.equal(keys, k) and torch.equal(values, v)


def test_kv_cache_helpers_keep_the_prompt_differentiable(llama):
    plm = PromptedLM(llama, fast=True)
    prompt = make_prompt_tensor(llama.hidden_size, 3, 1).requires_grad_(True)
    cache = plm.prepare(prompt).cache
    moved = select_cache(pad_cache(expand_cache(cache, 2), 4), torch.tensor([1]))
    sum(k.sum() + v.sum() for k, v, *_ in layer_tensors(moved)).backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0


def test_prompt_changes_the_scores(llama):
    plm = PromptedLM(llama, fast=True)
    a = totals(plm.score(make_prompt_tensor(32, seed=1), INPUTS, CANDIDATES))
    b = totals(plm.score(make_prompt_tensor(32, seed=2), INPUTS, CANDIDATES))
    assert max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)) > 1e-4


def test_greedy_generation_fast_plain_and_reference_agree():
    lm = make_lm("wide")
    prompt = make_prompt_tensor(lm.hidden_size)
    fast = PromptedLM(lm, fast=True).generate(prompt, INPUTS, 6)
    plain = PromptedLM(lm, fast=False).generate(prompt, INPUTS, 6)
    ref = reference_greedy(lm, prompt, INPUTS, 6)
    assert fast == plain == ref
    assert all(len(g) == 6 for g in fast)
    assert len({t for g in fast for t in g}) > 3  # not one repeated token


def test_generation_stops_at_eos():
    lm = make_lm("wide")
    prompt = make_prompt_tensor(lm.hidden_size)
    free = PromptedLM(lm, fast=True).generate(prompt, INPUTS, 6)
    # Make a token the model produces mid-way the EOS token: outputs stop right before it.
    stop = free[0][2]
    lm.tokenizer.eos_token = WORDS[stop]
    assert lm.tokenizer.eos_token_id == stop
    expected = [g[: g.index(stop)] if stop in g else g for g in free]
    assert expected[0] == free[0][:2]
    for fast in (True, False):
        assert PromptedLM(lm, fast=fast).generate(prompt, INPUTS, 6) == expected
    assert reference_greedy(lm, prompt, INPUTS, 6) == expected


# -- rank-classification loss ----------------------------------------------------------------

GOLD = torch.tensor([1, 2, 0])  # one gold candidate per input of INPUTS/CANDIDATES


def expected_rank_loss(ref: list[list[float]], length_normalize: bool = False) -> float:
    """Mean over inputs of -log softmax(candidate scores)[gold], from reference scores."""
    total = 0.0
    for row, cands, gold in zip(ref, CANDIDATES, GOLD.tolist()):
        values = torch.tensor([v / len(c) if length_normalize else v for v, c in zip(row, cands)])
        total -= (values[gold] - torch.logsumexp(values, 0)).item()
    return total / len(ref)


@pytest.mark.parametrize("length_normalize", [False, True])
def test_rank_loss_is_cross_entropy_over_the_evaluation_scores(length_normalize):
    lm = make_lm("wide")
    prompt = make_prompt_tensor(lm.hidden_size)
    expected = expected_rank_loss(reference_scores(lm, prompt, INPUTS, CANDIDATES), length_normalize)
    grads = []
    for fast in (True, False):
        param = torch.nn.Parameter(prompt.clone())
        loss = PromptedLM(lm, fast=fast).rank_loss(param, INPUTS, CANDIDATES, GOLD, length_normalize)
        assert loss.item() == pytest.approx(expected, abs=1e-5)
        loss.backward()
        grads.append(param.grad)
    assert grads[0].abs().max() > 1e-4
    assert torch.allclose(grads[0], grads[1], atol=1e-5)  # fast and plain paths agree on the gradient too


def test_t5_rank_loss_matches_its_scores(t5):
    prompt = torch.nn.Parameter(make_prompt_tensor(t5.hidden_size))
    plm = PromptedLM(t5)
    loss = plm.rank_loss(prompt, INPUTS, CANDIDATES, GOLD)
    assert loss.item() == pytest.approx(expected_rank_loss(totals(plm.score(prompt, INPUTS, CANDIDATES))), abs=1e-5)
    loss.backward()
    assert prompt.grad.abs().max() > 0


def ranked_and_generative_rows(lm: LoadedModel) -> list:
    """Encoded rows of the toy task (ranked: candidates + gold) and two generation rows."""
    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder)
    task = toy_task()
    ranked = [enc.encode(task, e) for e in task.load("train")[:4]]
    generative = [
        Encoded(enc.input_ids("sst2 sentence: so great"), enc.target_ids("a movie", eos=True)),
        Encoded(enc.input_ids("it is"), enc.target_ids("really awful", eos=True)),
    ]
    return ranked[:2] + generative[:1] + ranked[2:] + generative[1:]


@pytest.mark.parametrize("fast", [True, False])
def test_loss_objectives_on_ranked_generative_and_mixed_batches(fast):
    lm = make_lm("wide")
    enc = Encoder(lm.tokenizer, False)
    plm = PromptedLM(lm, fast=fast)
    prompt = make_prompt_tensor(lm.hidden_size)
    rows = ranked_and_generative_rows(lm)
    ranked, generative = [r for r in rows if r.gold >= 0], [r for r in rows if r.choices is None]
    assert len(ranked) == 4 and len(generative) == 2
    rank_part = plm.rank_loss(
        prompt, [r.input_ids for r in ranked], [r.choices for r in ranked], torch.tensor([r.gold for r in ranked])
    )
    lm_part = plm.lm_loss(prompt, enc.collate(generative))
    mixed = plm.loss(prompt, enc.collate(rows), "rank")
    assert mixed.item() == pytest.approx((4 * rank_part.item() + 2 * lm_part.item()) / 6, abs=1e-5)
    assert plm.loss(prompt, enc.collate(ranked), "rank").item() == pytest.approx(rank_part.item(), abs=1e-6)
    assert plm.loss(prompt, enc.collate(generative), "rank").item() == pytest.approx(lm_part.item(), abs=1e-6)
    lm_only = plm.loss(prompt, enc.collate(rows), "lm").item()
    assert lm_only == pytest.approx(plm.lm_loss(prompt, enc.collate(rows)).item())
    assert abs(mixed.item() - plm.loss(prompt, enc.collate(rows), "lm").item()) > 1e-3  # the objectives differ
    # rank+lm: the rank part (weighted by ranked rows) plus the LM loss of all rows, computed
    # here by the separate LM path, while `loss` takes the ranked rows' LM part from their scores.
    both = plm.loss(prompt, enc.collate(rows), "rank+lm")
    all_lm = plm.lm_loss(prompt, enc.collate(rows))
    assert both.item() == pytest.approx(4 / 6 * rank_part.item() + all_lm.item(), abs=1e-5)


def test_t5_rank_plus_lm_loss_matches_its_parts(t5):
    rows = ranked_and_generative_rows(t5)
    batch = Encoder(t5.tokenizer, True).collate(rows)
    plm = PromptedLM(t5)
    prompt = make_prompt_tensor(t5.hidden_size)
    ranked = [r for r in rows if r.gold >= 0]
    gold = torch.tensor([r.gold for r in ranked])
    rank_part = plm.rank_loss(prompt, [r.input_ids for r in ranked], [r.choices for r in ranked], gold)
    expected = 4 / 6 * rank_part.item() + plm.lm_loss(prompt, batch).item()
    assert plm.loss(prompt, batch, "rank+lm").item() == pytest.approx(expected, abs=1e-5)


def test_encoder_gives_ranked_examples_their_candidates_and_gold():
    lm = make_lm("tiny")
    enc = Encoder(lm.tokenizer, False)
    task = toy_task()
    pos, neg = (next(e for e in task.load("train") if e.target == label) for label in ("pos", "neg"))
    words = [enc.target_ids(w) for w in task.verbalizer.values()]  # neg, pos
    assert enc.encode(task, neg).choices == tuple(words) and enc.encode(task, neg).gold == 0
    assert enc.encode(task, pos).gold == 1
    picked = Example({"sentence": "so great"}, "movie", choices=("the movie", "movie"))
    assert enc.encode(task, picked).gold == 1
    assert enc.encode(task, Example({"sentence": "x"}, "great", choices=("a", "b"))).gold == -1  # gold not a candidate
    batch = enc.collate([enc.encode(task, e) for e in (pos, neg, picked)])
    assert batch.gold.tolist() == [1, 0, 1] and batch.select([2, 0]).gold.tolist() == [1, 1]
    assert batch.select([2, 0]).inputs == [batch.inputs[2], batch.inputs[0]]


# -- decoder-only, bf16 -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tiny", "wide"])
def test_bf16_fast_and_plain_agree(kind):
    lm = make_lm(kind, torch.bfloat16)
    assert lm.dtype == torch.bfloat16
    prompt, batch = make_prompt_tensor(lm.hidden_size), toy_batch(lm)
    fast_loss, fast_grad = loss_and_grad(PromptedLM(lm, fast=True), prompt, batch)
    plain_loss, plain_grad = loss_and_grad(PromptedLM(lm, fast=False), prompt, batch)
    assert fast_grad.dtype == torch.float32  # the prompt trains in fp32
    assert fast_loss.item() == pytest.approx(plain_loss.item(), rel=2e-2)
    assert (fast_grad - plain_grad).norm() <= 5e-2 * plain_grad.norm()
    fast = totals(PromptedLM(lm, fast=True).score(prompt, INPUTS, CANDIDATES))
    plain = totals(PromptedLM(lm, fast=False).score(prompt, INPUTS, CANDIDATES))
    ref = reference_scores(make_lm(kind), prompt, INPUTS, CANDIDATES)  # fp32 model
    for a, b, r in zip(fast, plain, ref):
        assert a == pytest.approx(b, rel=2e-2, abs=5e-2)
        assert a == pytest.approx(r, rel=5e-2, abs=0.2)


def test_bf16_greedy_generation_fast_equals_plain():
    lm = make_lm("wide", torch.bfloat16)
    prompt = make_prompt_tensor(lm.hidden_size)
    fast = PromptedLM(lm, fast=True).generate(prompt, INPUTS, 5)
    assert fast == PromptedLM(lm, fast=False).generate(prompt, INPUTS, 5)
    assert all(len(g) == 5 for g in fast)


# -- encoder-decoder (T5) ------------------------------------------------------------------------


def test_t5_has_no_fast_path(t5):
    assert PromptedLM(t5, fast=True).fast is False


def test_t5_loss_is_finite_matches_hf_loss_and_only_prompt_trains(t5):
    batch = toy_batch(t5)
    assert batch.labels.shape[0] == batch.input_ids.shape[0]
    prompt = torch.nn.Parameter(make_prompt_tensor(t5.hidden_size))
    loss = PromptedLM(t5).loss(prompt, batch)
    assert torch.isfinite(loss)
    loss.backward()
    assert prompt.grad.shape == prompt.shape and prompt.grad.abs().max() > 0
    assert all(not p.requires_grad and p.grad is None for p in t5.model.parameters())
    with torch.no_grad():
        embeds, mask, _ = prepend_prompt(prompt, t5.embed(batch.input_ids), batch.attention_mask)
        hf = t5.model(inputs_embeds=embeds, attention_mask=mask, labels=batch.labels).loss
    assert loss.item() == pytest.approx(hf.item(), abs=1e-5)


def test_t5_scores_match_manual_log_probs(t5):
    prompt = make_prompt_tensor(t5.hidden_size)
    got = PromptedLM(t5).score(prompt, INPUTS, CANDIDATES)
    with torch.no_grad():
        for inp, cands, row in zip(INPUTS, CANDIDATES, got):
            ids = torch.tensor([inp])
            embeds, mask, _ = prepend_prompt(prompt, t5.embed(ids), torch.ones_like(ids))
            for cand, (total, n) in zip(cands, row):
                labels = torch.tensor([cand])
                logp = F.log_softmax(t5.model(inputs_embeds=embeds, attention_mask=mask, labels=labels).logits[0], -1)
                assert n == len(cand)
                assert total == pytest.approx(logp[torch.arange(len(cand)), labels[0]].sum().item(), abs=1e-4)


def test_t5_generation_returns_greedy_token_lists(t5):
    prompt = make_prompt_tensor(t5.hidden_size)
    out = PromptedLM(t5).generate(prompt, INPUTS, 4)
    assert len(out) == len(INPUTS)
    assert all(isinstance(g, list) and len(g) <= 4 and all(isinstance(t, int) for t in g) for g in out)
    with torch.no_grad():
        for inp, got in zip(INPUTS, out):
            ids = torch.tensor([inp])
            embeds, mask, _ = prepend_prompt(prompt, t5.embed(ids), torch.ones_like(ids))
            dec, new = [t5.model.config.decoder_start_token_id], []
            for _ in range(4):
                decoder_ids = torch.tensor([dec])
                logits = t5.model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=decoder_ids).logits
                token = logits[0, -1].argmax().item()
                if token == t5.tokenizer.eos_token_id:
                    break
                new.append(token)
                dec.append(token)
            assert got == new


# -- a tokenizer that starts every text with <bos> (Gemma) -------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_the_tokenizers_bos_goes_first_then_the_prompt_then_the_input(fast):
    lm = with_bos(learnable_llama())
    bos = lm.tokenizer("a0", add_special_tokens=True)["input_ids"][0]
    plm = PromptedLM(lm, fast=fast)
    assert plm.lead_ids == [bos] and PromptedLM(learnable_llama()).lead_ids == []
    prompt = make_prompt_tensor(lm.hidden_size)
    lead = torch.cat([lm.embed(torch.tensor([[bos]]))[0], prompt])  # what the model must see in front
    ref = reference_scores(lm, lead, INPUTS, CANDIDATES)
    assert flat(totals(plm.score(prompt, INPUTS, CANDIDATES))) == pytest.approx(flat(ref), abs=1e-4)
    assert flat(ref) != pytest.approx(flat(reference_scores(lm, prompt, INPUTS, CANDIDATES)), abs=1e-3)
    # rows with prompts of different lengths, and no prompt at all (model tuning, LoRA): <bos> still first
    empty = prompt[:0]
    rows = plm.score_rows([prompt, empty, prompt[:2]], INPUTS, CANDIDATES)
    for got, p, inp, cands in zip(rows, [prompt, empty, prompt[:2]], INPUTS, CANDIDATES):
        want = reference_scores(lm, torch.cat([lead[:1], p]), [inp], [cands])[0]
        assert [t for t, _ in got] == pytest.approx(want, abs=1e-4)
    # the loss and its gradient: the prompt's alone, (P, H)
    batch = toy_batch(lm)
    loss, grad = loss_and_grad(plm, prompt, batch)
    param = torch.nn.Parameter(prompt.clone())
    expected = reference_loss(lm, torch.cat([lead[:1], param]), toy_pairs(lm))
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert grad.shape == prompt.shape and torch.allclose(grad, param.grad, atol=1e-5)
    assert plm.generate(prompt, INPUTS, 4) == reference_greedy(lm, lead, INPUTS, 4)
