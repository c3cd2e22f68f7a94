"""prompt.py: each initialiser of Lester et al. §2.1."""

from __future__ import annotations

import pytest
import torch

from helpers import WORDS
from softprompt.errors import ConfigError
from softprompt.prompt import TOP_TOKENS, _common_token_ids, make_prompt


@pytest.fixture
def emb(llama) -> torch.Tensor:
    return llama.model.get_input_embeddings().weight.detach().float()  # (V, H)


def _row_ids(prompt: torch.Tensor, emb: torch.Tensor) -> list[int | None]:
    """For each prompt row, the id of the embedding row it equals exactly (None if none)."""
    out = []
    for row in prompt:
        hits = (emb == row).all(dim=1).nonzero().flatten().tolist()
        out.append(hits[0] if hits else None)
    return out


def test_a_prompt_is_a_fresh_fp32_matrix(llama, emb):
    p = make_prompt(3, "file", emb, llama.tokenizer, weight=torch.ones(3, 32, dtype=torch.bfloat16))
    assert p.shape == (3, 32) and p.dtype == torch.float32 and not p.requires_grad


def test_uniform_is_in_half_interval_and_seeded(llama, emb):
    p = make_prompt(50, "uniform", emb, llama.tokenizer, seed=3)
    assert p.shape == (50, 32)
    assert p.min() >= -0.5 and p.max() <= 0.5
    assert p.std() > 0.2  # actually spread over the interval (uniform std is 0.29)
    assert torch.equal(p, make_prompt(50, "uniform", emb, llama.tokenizer, seed=3))
    assert not torch.equal(p, make_prompt(50, "uniform", emb, llama.tokenizer, seed=4))


def test_common_token_ids_skip_special_tokens(llama):
    ids = _common_token_ids(llama.tokenizer).tolist()
    assert ids == list(range(3, len(WORDS)))  # <pad>, </s>, <unk> are 0, 1, 2
    assert len(_common_token_ids(llama.tokenizer, count=5)) == 5


def test_common_token_ids_keep_only_the_first_5000(llama):
    class BigVocab:
        all_special_ids = [0, 7]

        def __len__(self):
            return 9000

    ids = _common_token_ids(BigVocab()).tolist()
    assert len(ids) == TOP_TOKENS
    assert ids[:6] == [1, 2, 3, 4, 5, 6] and ids[6] == 8 and ids[-1] == TOP_TOKENS + 1


def test_vocab_rows_are_distinct_embedding_rows_of_ordinary_tokens(llama, emb):
    p = make_prompt(10, "vocab", emb, llama.tokenizer, seed=0)
    ids = _row_ids(p, emb)
    assert None not in ids
    assert all(i >= 3 for i in ids)  # never a special token
    assert len(set(ids)) == 10  # sampled without replacement while the pool allows


def test_vocab_longer_than_vocabulary_samples_with_replacement(llama, emb):
    p = make_prompt(100, "vocab", emb, llama.tokenizer, seed=0)
    ids = _row_ids(p, emb)
    assert None not in ids and all(i >= 3 for i in ids)
    assert p.shape == (100, 32)


def test_labels_rows_are_label_embeddings_then_vocab(llama, emb):
    # "great" is one token; "ok" is two ("o", "k"): its row is their mean.
    p = make_prompt(6, "labels", emb, llama.tokenizer, labels=["great", "ok", " awful "], seed=1)
    assert torch.equal(p[0], emb[WORDS.index("great")])
    assert torch.allclose(p[1], (emb[WORDS.index("o")] + emb[WORDS.index("k")]) / 2)
    assert not torch.equal(p[1], emb[WORDS.index("o")])
    assert torch.equal(p[2], emb[WORDS.index("awful")])
    rest = _row_ids(p[3:], emb)
    assert None not in rest and all(i >= 3 for i in rest)


def test_labels_more_labels_than_positions_keeps_the_first(llama, emb):
    p = make_prompt(1, "labels", emb, llama.tokenizer, labels=["yes", "no", "maybe"])
    assert p.shape == (1, 32)
    assert torch.equal(p[0], emb[WORDS.index("yes")])


def test_text_repeats_its_tokens_to_fill(llama, emb):
    p = make_prompt(5, "text", emb, llama.tokenizer, text="great movie")
    expected = [WORDS.index(w) for w in ["great", "movie", "great", "movie", "great"]]
    assert torch.equal(p, emb[expected])
    short = make_prompt(1, "text", emb, llama.tokenizer, text="great movie")
    assert torch.equal(short, emb[[WORDS.index("great")]])


def test_file_truncates_a_longer_prompt(llama, emb):
    saved = torch.randn(6, 32)
    p = make_prompt(4, "file", emb, llama.tokenizer, weight=saved)
    assert torch.equal(p, saved[:4])


def test_file_extends_a_shorter_prompt_with_vocab_rows(llama, emb):
    saved = torch.randn(2, 32)
    p = make_prompt(5, "file", emb, llama.tokenizer, weight=saved)
    assert p.shape == (5, 32)
    assert torch.equal(p[:2], saved)
    rest = _row_ids(p[2:], emb)
    assert None not in rest and all(i >= 3 for i in rest)


def test_prompt_does_not_alias_its_source(llama, emb):
    saved = torch.randn(3, 32)
    before = saved.clone()
    p = make_prompt(3, "file", emb, llama.tokenizer, weight=saved)
    with torch.no_grad():
        p.add_(1.0)
    assert torch.equal(saved, before)
    table = llama.model.get_input_embeddings().weight
    table_before = table.detach().clone()
    t = make_prompt(2, "text", table.detach(), llama.tokenizer, text="great")
    with torch.no_grad():
        t.zero_()
    assert torch.equal(table, table_before)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"length": 0, "init": "vocab"}, "--prompt-length"),
        ({"length": -3, "init": "uniform"}, "--prompt-length"),
        ({"length": 4, "init": "zeros"}, "--init 'zeros'"),
        ({"length": 4, "init": "labels"}, "--init labels"),
        ({"length": 4, "init": "text"}, "--init-text"),
        ({"length": 4, "init": "text", "text": ""}, "--init-text"),
        ({"length": 4, "init": "file"}, "--init-from"),
        ({"length": 4, "init": "file", "weight": torch.zeros(4, 16)}, "width 16 != model width 32"),
    ],
)
def test_bad_settings_raise_config_error(llama, emb, kwargs, needle):
    length, init = kwargs.pop("length"), kwargs.pop("init")
    with pytest.raises(ConfigError) as err:
        make_prompt(length, init, emb, llama.tokenizer, **kwargs)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_text_without_tokens_raises(llama, emb):
    with pytest.raises(ConfigError, match="no tokens"):
        make_prompt(4, "text", emb, llama.tokenizer, text="   ")
