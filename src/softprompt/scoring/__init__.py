"""Forward passes of a prompted frozen model: training loss, label scores, generation.

lm.py          PromptedLM: picks a backend, holds the loss objectives and score formatting
prepared.py    PreparedPrompt: a prompt plus its key/value cache (fast backend)
backends.py    the Backend protocol; rows grouped by prompt length
fast.py        decoder-only, shared prompt key/value cache, head only where needed
plain.py       decoder-only, prompt prepended, Hugging Face forward
seq2seq.py     encoder-decoder (T5)
decoding.py    body/head split and greedy decoding of decoder-only models
kv_cache.py    row and position surgery on a transformers Cache (the only module that knows its layout)
candidates.py  flat <-> (B, K) bookkeeping of ragged candidate lists
"""

from softprompt.scoring.backends import Backend
from softprompt.scoring.lm import PromptedLM
from softprompt.scoring.prepared import PreparedPrompt

__all__ = ["Backend", "PreparedPrompt", "PromptedLM"]
