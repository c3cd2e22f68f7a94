"""Tiny randomly initialised models built in the test, and a small char-level tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from softprompt.models.identity import ModelIdentity, fingerprint_embeddings
from softprompt.models.loading import LoadedModel

WORDS = ["<pad>", "</s>", "<unk>"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,:'!?") + [
    "positive", "negative", "great", "awful", "movie", "sentence", "sst2", "yes", "no", "maybe",
]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer (whole words from WORDS, else characters) over a tiny vocabulary."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", continuing_subword_prefix="", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _wrap(model, tokenizer, name) -> LoadedModel:
    model.eval().requires_grad_(False)
    emb = model.get_input_embeddings().weight
    identity = ModelIdentity(name, fingerprint_embeddings(emb), emb.shape[1], type(model).__name__)
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity, dtype=emb.dtype)


def tiny_llama(seed: int = 0, dtype=torch.float32) -> LoadedModel:
    torch.manual_seed(seed)
    tok = make_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True,
    )
    return _wrap(LlamaForCausalLM(cfg).to(dtype), tok, f"tiny-llama-{seed}")


def tiny_t5(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    tok = make_tokenizer()
    cfg = T5Config(
        vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return _wrap(T5ForConditionalGeneration(cfg), tok, f"tiny-t5-{seed}")


@pytest.fixture
def llama() -> LoadedModel:
    return tiny_llama()


@pytest.fixture
def t5() -> LoadedModel:
    return tiny_t5()
