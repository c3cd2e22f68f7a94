"""Does an int8 frozen model pay for evaluation here? fp32, bf16 and int8 side by side.

The frozen body never changes, so its linear layers may run in 8-bit integers at evaluation
and serving time. This script evaluates one saved prompt on SST-2 dev with the embedded model
(or --model) three ways, alternating, `--repeats` times each:

  * fp32 weights;
  * bf16 weights (what `--precision bf16` runs);
  * int8: PyTorch's dynamic quantisation of every linear layer of the transformer body
    (int8 weights per output channel, activations quantised per batch, int8 x int8 matmuls through
    fbgemm/oneDNN; the embedding and the output head stay fp32, since the head shares its
    weight with the embedding).

It prints examples/s (median, min-max), dev accuracy and the accuracy difference to fp32,
plus the raw matmul rate of one 1280 x 576 x 1536 product per kind, so the end-to-end
numbers can be read against what the kernels themselves offer.

    python benchmarks/int8_eval.py --prompt runs/sst2
    python benchmarks/int8_eval.py --prompt runs/sst2 --eval-examples 872 --repeats 3

softprompt offers int8 as a precision only if this shows it faster than the best of fp32
and bf16 at equal accuracy (within 0.5 point); see docs/benchmarks/speed.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from pathlib import Path

import torch


def int8_body(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of fp32 `model` whose body's linear layers are dynamically quantised to int8."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model = copy.deepcopy(model)
    body = getattr(model, model.base_model_prefix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates the quantised tensor API in favour of torchao
        quantize_dynamic(body, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return model


def kernel_rates(reps: int = 10) -> dict[str, float]:
    """GFLOP/s of one (1280 x 576) @ (576 x 1536) product: fp32, bf16, int8 dynamic."""
    from torch.ao.quantization import quantize_dynamic

    n, k, m = 1280, 576, 1536
    lin = torch.nn.Linear(k, m, bias=False)
    x = torch.randn(n, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8)
    lin_bf16 = copy.deepcopy(lin).bfloat16()
    forms = {"fp32": lambda: lin(x), "bf16": lambda: lin_bf16(x.bfloat16()), "int8": lambda: q(x)}
    rates = {}
    with torch.no_grad():
        for name, f in forms.items():
            f()
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                best = min(best, (time.perf_counter() - t0) / reps)
            rates[name] = 2 * n * k * m / best / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt", required=True, type=Path, help="a trained SST-2 prompt folder (or run folder)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--eval-examples", type=int, default=872, help="dev examples (seeded sample; 872 = all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from softprompt import PromptedLM, evaluate, load_model
    from softprompt.io import load_prompt, resolve_prompt_dir
    from softprompt.models.precision import cpu_flags
    from softprompt.tasks import dev_sample, get_task

    saved = load_prompt(resolve_prompt_dir(args.prompt))
    task = get_task("sst2")
    dev = dev_sample(task.load("dev"), args.eval_examples)
    fp32 = load_model(args.model, precision="fp32")
    bf16 = load_model(args.model, precision="bf16")
    int8 = copy.copy(fp32)
    int8.model = int8_body(fp32.model)
    models = {"fp32": fp32, "bf16": bf16, "int8": int8}
    print(f"cpu flags: {' '.join(cpu_flags() or ()) or 'none'}; threads {torch.get_num_threads()}")
    print("kernel GFLOP/s (1280x576 @ 576x1536): " + ", ".join(f"{k} {v:.0f}" for k, v in kernel_rates().items()))

    rates: dict[str, list[float]] = {k: [] for k in models}
    accuracy: dict[str, float] = {}
    for _ in range(args.repeats):
        for name, lm in models.items():
            plm = PromptedLM(lm)
            evaluate(plm, saved.weight, task, dev[:8], batch_size=args.batch_size)  # warm-up
            t0 = time.perf_counter()
            result = evaluate(plm, saved.weight, task, dev, batch_size=args.batch_size)
            rates[name].append(len(dev) / (time.perf_counter() - t0))
            accuracy[name] = result.metrics["accuracy"]

    print(f"\nSST-2 dev, {len(dev)} examples, batch {args.batch_size}, median of {args.repeats} alternating runs\n")
    print("| weights | eval ex/s | (min-max) | x fp32 | dev acc | vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(rates["fp32"])
    for name in models:
        med = statistics.median(rates[name])
        print(
            f"| {name} | {med:.1f} | {min(rates[name]):.1f}-{max(rates[name]):.1f} | {med / base:.2f} | "
            f"{100 * accuracy[name]:.2f}% | {100 * (accuracy[name] - accuracy['fp32']):+.2f} |"
        )


if __name__ == "__main__":
    main()
