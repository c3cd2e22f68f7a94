"""Shorten a long input to fit the model's input budget without cutting the template.

A template such as "review: {text} Sentiment:" puts the label cue after the input; cutting
the formatted text at N tokens drops the cue (and, in a two-field template, the whole second
field) exactly on the inputs that are long. Here only the example's fields are shortened:
the longest field first ("water-filling", so a short hypothesis survives beside a long
premise), each keeping its head, its tail, or both (Sun et al. 2019, "How to Fine-Tune BERT
for Text Classification": a quarter head and three quarters tail read long IMDB reviews best,
because a review's verdict sits at its start or, more often, its end). Cuts fall on token
boundaries of the field's own tokenisation, mapped back to characters, so the shortened field
is a substring (two for head+tail) of the original text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from softprompt.config import Truncation

Tokenize = Callable[[str], list[int]]
Offsets = Callable[[str], list[tuple[int, int]]]


HEAD_SHARE = 0.25  # of the kept tokens under head+tail (Sun et al. 2019: 128 of 510)


def kept_spans(n: int, keep: int, strategy: str) -> list[tuple[int, int]]:
    """Token index ranges [start, end) of `n` tokens that a cut to `keep` tokens keeps."""
    if keep >= n:
        return [(0, n)]
    if keep <= 0:
        return []
    kind = Truncation(strategy)
    if kind is Truncation.HEAD:
        return [(0, keep)]
    if kind is Truncation.TAIL:
        return [(n - keep, n)]
    head = int(keep * HEAD_SHARE)
    return [(0, head), (n - (keep - head), n)] if head else [(n - keep, n)]


def cut_ids(ids: Sequence[int], keep: int, strategy: str) -> list[int]:
    """`ids` cut to `keep` tokens by `strategy`."""
    return [i for start, end in kept_spans(len(ids), keep, strategy) for i in ids[start:end]]


def shorten(text: str, keep: int, strategy: str, offsets: Offsets) -> str:
    """`text` cut to about `keep` of its tokens, on token boundaries (`offsets(text)`: each token's
    character span); the two kept parts of head+tail are joined by one space."""
    spans = offsets(text)
    pieces = [text[spans[start][0] : spans[end - 1][1]] for start, end in kept_spans(len(spans), keep, strategy)]
    return " ".join(p.strip() for p in pieces if p.strip())


def budgets(lengths: Mapping[str, int], total: int) -> dict[str, int]:
    """Tokens each field may keep so that together they keep at most `total`: every field is
    capped at one level, the highest that fits, so the longest fields give up tokens first."""
    if sum(lengths.values()) <= total:
        return dict(lengths)
    low, high = 0, max(lengths.values())
    while low < high:  # the highest cap whose capped lengths fit
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in lengths.values()) <= total:
            low = mid
        else:
            high = mid - 1
    return {name: min(n, low) for name, n in lengths.items()}


def fit(
    template: str,
    fields: Mapping[str, str],
    names: Sequence[str],
    max_tokens: int,
    strategy: str,
    tokenize: Tokenize,
    offsets: Offsets,
) -> list[int]:
    """Token ids of `template` formatted with `fields`, at most `max_tokens` of them, shortening
    only the fields `names`. Token counts of a field alone and inside the text differ by a token
    or so at its edges, so the fit is re-measured and tightened a few times; a template longer
    than the budget by itself is cut as a whole (the last resort)."""
    ids = tokenize(template.format(**fields))
    current = dict(fields)
    for _ in range(4):
        over = len(ids) - max_tokens
        if over <= 0:
            return ids
        lengths = {name: len(offsets(current[name])) for name in names}
        allowed = budgets(lengths, max(0, sum(lengths.values()) - over))
        for name in names:
            if allowed[name] < lengths[name]:
                current[name] = shorten(current[name], allowed[name], strategy, offsets)
        ids = tokenize(template.format(**current))
    return ids if len(ids) <= max_tokens else cut_ids(ids, max_tokens, strategy)
