"""Where softprompt's time goes: torch.profiler over training steps and evaluation batches.

The speed benchmark (peft_vs_softprompt.py) says how fast; this says why not faster. It
runs a few training steps and evaluation batches of SST-2 on the embedded model (or
--model) under torch.profiler and prints, for each phase, the share of CPU time per kind
of work (matrix multiplies, attention, normalisation and element-wise ops, the rest) with
the GFLOP/s the matrix multiplies reach against a matmul peak measured in the same run,
then the top operators by self time.

    python benchmarks/profile_step.py                   # 10 training steps, 10 eval batches
    python benchmarks/profile_step.py --steps 20 --batch-size 16 --top 15

If matrix multiplies take most of the time at close to the peak rate, the step is bound by
the frozen model's own arithmetic, which no scheduling can remove.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from peft_vs_softprompt import matmul_peak  # noqa: E402

KINDS = {  # kind: substrings of aten op names (self time is counted, so nesting is not double counted)
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::_mkldnn", "aten::baddbmm"),
    "attention": ("scaled_dot_product", "flash_attention", "aten::_softmax", "aten::softmax"),
    "norm / element-wise": (
        "aten::mul",
        "aten::add",
        "aten::pow",
        "aten::mean",
        "aten::rsqrt",
        "aten::silu",
        "aten::neg",
        "aten::cat",
        "aten::sub",
        "aten::div",
        "aten::exp",
        "aten::copy_",
        "aten::to",
        "aten::_to_copy",
        "aten::where",
        "aten::index",
        "aten::sum",
        "aten::fill_",
    ),
}


def kind_of(name: str) -> str:
    for kind, keys in KINDS.items():
        if any(k in name for k in keys):
            return kind
    return "other"


def summarise(prof, label: str, peak: float, top: int) -> None:
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or "attention" in e.key]
    total = sum(e.self_cpu_time_total for e in events) or 1
    by_kind: dict[str, float] = {}
    flops = 0
    for e in events:
        kind = kind_of(e.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + e.self_cpu_time_total
        if kind == "matmul":
            flops += e.flops or 0
    mm_s = by_kind.get("matmul", 0.0) / 1e6
    print(f"\n{label}: {total / 1e6:.2f} s of operator time")
    print(f"{'kind':22s} {'share':>7s}")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{kind:22s} {100 * t / total:6.1f}%")
    if flops and mm_s:
        print(
            f"matrix multiplies: {flops / 1e9:.1f} GFLOP in {mm_s:.2f} s = {flops / 1e9 / mm_s:.0f} GFLOP/s "
            f"(matmul peak measured now: {peak:.0f} GFLOP/s)"
        )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="softprompt model name (default: embedded SmolLM2-135M)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--steps", type=int, default=10, help="training steps and evaluation batches to profile")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=20)
    parser.add_argument("--top", type=int, default=12, help="operators to list per phase")
    args = parser.parse_args()

    from softprompt import PromptedLM, load_model
    from softprompt.batching import Encoder, bucketed_batches
    from softprompt.evaluate import predict
    from softprompt.tasks import dev_sample, get_task

    lm = load_model(args.model, precision=args.precision)
    peak = matmul_peak(lm.dtype)
    task = get_task("sst2")
    rng = random.Random(0)
    train = rng.sample(task.load("train"), args.steps * args.batch_size)
    dev = dev_sample(task.load("dev"), args.steps * 32)
    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder)
    rows = [enc.encode(task, e) for e in train]
    stream = bucketed_batches([len(r.input_ids) + len(r.target_ids) for r in rows], args.batch_size, rng)
    batches = [next(stream) for _ in range(args.steps)]
    plm = PromptedLM(lm)
    emb = lm.model.get_input_embeddings().weight
    prompt = torch.nn.Parameter(emb[: args.prompt_length].detach().float().clone())

    def train_steps() -> None:
        for idx in batches:
            plm.loss(prompt, enc.collate([rows[i] for i in idx]).to(lm.device)).backward()

    train_steps()  # warm-up (allocator, one-off kernels)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        train_steps()
    summarise(prof, f"training, {args.steps} steps x {args.batch_size} examples ({lm.dtype})", peak, args.top)

    predict(plm, prompt.detach(), task, dev[:32], batch_size=32)
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        predict(plm, prompt.detach(), task, dev, batch_size=32)
    summarise(prof, f"evaluation, {len(dev)} examples in batches of 32 ({lm.dtype})", peak, args.top)


if __name__ == "__main__":
    main()
