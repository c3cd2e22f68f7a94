"""Build the long-review user task: a few hundred IMDB train reviews of several hundred words,
labels written as two-word phrases, a CSV for training and a JSONL for dev (a disjoint part of
IMDB train), as a user would bring their own data.

    python benchmarks/make_long_reviews.py                     # -> runs/long-reviews/{train.csv,dev.jsonl}
    python benchmarks/make_long_reviews.py --train 400 --dev 300 --min-words 300 --max-words 900

It prints the `softprompt train` command that trains on it. Reviews come from
../shared/data/IMDB/aclImdb.tar.gz (or $SOFTPROMPT_DATA), its train split only; the selection
is seeded and balanced (half "thumbs up", half "thumbs down" in each file), and no review is in
both files.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import shlex
from pathlib import Path

from softprompt.io import atomic_write_text
from softprompt.tasks.readers import data_file, read_imdb

PHRASES = {"pos": "thumbs up", "neg": "thumbs down"}
TEMPLATE = "Review: {review} Verdict:"


def pick(reviews, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """`n` reviews, half of each label, drawn from `reviews` (removed from it)."""
    chosen = []
    for label in ("pos", "neg"):
        pool = [r for r in reviews if r[1] == label]
        take = pool[: n // 2 + (n % 2 if label == "pos" else 0)]
        chosen += take
        taken = {id(r) for r in take}
        reviews[:] = [r for r in reviews if id(r) not in taken]
    rng.shuffle(chosen)
    return [(text, PHRASES[label]) for text, label, _ in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/long-reviews"))
    parser.add_argument("--train", type=int, default=400, help="training reviews")
    parser.add_argument("--dev", type=int, default=300, help="dev reviews")
    parser.add_argument("--min-words", type=int, default=300)
    parser.add_argument("--max-words", type=int, default=900)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    reviews = [r for r in read_imdb(data_file("IMDB", "aclImdb.tar.gz"), "train")]
    reviews = [r for r in reviews if args.min_words <= len(r[0].split()) <= args.max_words]
    rng = random.Random(args.seed)
    rng.shuffle(reviews)
    train, dev = pick(reviews, args.train, rng), pick(reviews, args.dev, rng)
    if len(train) < args.train or len(dev) < args.dev:
        raise SystemExit(f"only {len(train)} + {len(dev)} reviews of {args.min_words}-{args.max_words} words")

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["review", "verdict"])
    writer.writerows(train)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "train.csv", buffer.getvalue())
    atomic_write_text(args.out / "dev.jsonl", "".join(json.dumps({"review": t, "verdict": v}) + "\n" for t, v in dev))
    words = [len(t.split()) for t, _ in train + dev]
    print(f"{args.out}: {len(train)} train, {len(dev)} dev reviews, {min(words)}-{max(words)} words "
          f"(mean {sum(words) / len(words):.0f})")
    command = [
        "softprompt", "train", "--task", "long-reviews",
        "--train-file", str(args.out / "train.csv"), "--dev-file", str(args.out / "dev.jsonl"),
        "--text-field", "review", "--label-field", "verdict",
        "--labels", ",".join(PHRASES.values()), "--template", TEMPLATE,
        "--out", "runs/long-reviews-prompt",
    ]  # fmt: skip
    print(" ".join(shlex.quote(part) for part in command))


if __name__ == "__main__":
    main()
