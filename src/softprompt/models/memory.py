"""Memory: what a method needs before the model loads, what the machine has, what was used.

`estimate(params, dtype_bytes, method)` is a peak in bytes from the parameter count alone:
  prompt, zero-shot: the frozen weights, plus activations;
  lora:              the frozen weights, a trainable copy of them (the loaded model stays
                     frozen for the next cell), adapters with their gradients and state;
  model:             the frozen weights, an fp32 copy, its gradients and the optimizer state
                     (Adafactor: factored, about nothing; AdamW: two fp32 moments), activations.
With `in_place` (a model loaded for this one run, tuning.py) there is no copy: LoRA holds the
weights once, model tuning its fp32 weights (the loaded ones, converted), gradients and state.
Activations are taken as a fixed share of the weights (ACTIVATION_SHARE; CHECKPOINTED_SHARE
with activation checkpointing) plus a floor: rough, on the safe side of the measured peaks, and
enough to refuse a 1.5B model-tuning run on a small machine before it is killed by the kernel.
`available()` is MemAvailable (Linux) or the free CUDA memory; `peak()` the RSS high-water
mark of this process (since `reset_peak()`), or torch's CUDA max allocated.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

from softprompt.errors import ModelError

# Activations and temporaries as a share of the frozen weights' bytes: set from peaks measured on
# Qwen2.5-Coder 0.5B/1.5B in bf16 at batch 4 (README), rounded up.
ACTIVATION_SHARE = 1.0
CHECKPOINTED_SHARE = 0.1  # the same with activation checkpointing (one layer's activations at a time)
# Model tuning's backward and optimizer-step temporaries, as a share of its fp32 weights: Qwen2.5-Coder
# 1.5B tuned in place in fp32 with checkpointing peaked at 17.4 GiB where the terms above give 15.2.
TUNING_TEMPORARIES = 0.35
FLOOR = 1 << 30  # the interpreter, torch, tokenizers, data: about 1 GiB whatever the model
GIB = 1 << 30


def param_count(config) -> int:
    """Parameters of a Hugging Face config's model, without building it (meta device)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(config)
    return sum(p.numel() for p in model.parameters())


def estimate(
    params: int,
    dtype_bytes: int,
    method: str,
    optimizer: str = "adafactor",
    checkpointing: bool = False,
    lora_share: float = 0.01,
    in_place: bool = False,
) -> int:
    """Peak bytes of training `method` on a model of `params` parameters held in `dtype_bytes`
    per weight (see the module docstring)."""
    weights = params * dtype_bytes
    need = weights + FLOOR + (CHECKPOINTED_SHARE if checkpointing else ACTIVATION_SHARE) * weights
    if method == "model":
        state = 8 * params if optimizer == "adamw" else 0.05 * 4 * params
        # fp32 weights (a copy, or the loaded ones converted in place), their gradients, optimizer state
        need += (4 * params - (weights if in_place else 0)) + 4 * params + state + TUNING_TEMPORARIES * 4 * params
    elif method == "lora":
        adapters = lora_share * params
        need += (0 if in_place else weights) + adapters * (4 + 4 + 8)  # the copy; adapters, gradients, state
    return int(need)


def check_fits(
    params: int,
    dtype_bytes: int,
    method: str,
    optimizer: str,
    device,
    what: str,
    checkpointing: bool = False,
    in_place: bool = False,
) -> int:
    """Raise ModelError (one line: the estimate, what is available, the override) when training
    `method` on a model of `params` parameters would not fit `device`; else return the estimate."""
    need = estimate(params, dtype_bytes, method, optimizer, checkpointing, in_place=in_place)
    have = available(device)
    if need > have:
        raise ModelError(
            f"{what}: --method {method} on {params / 1e9:.2f}B parameters ({8 * dtype_bytes}-bit frozen weights) needs "
            f"about {gib(need)}, {gib(have)} available on {torch.device(device).type} (smaller model, "
            "--precision bf16, --activation-checkpointing, --method prompt/lora, or --no-memory-check to try anyway)"
        )
    return need


def available(device: torch.device | str = "cpu") -> int:
    """Bytes this process can still allocate on `device` (CPU: MemAvailable)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def peak(device: torch.device | str = "cpu") -> int:
    """Peak bytes used since the last `reset_peak`: CUDA max allocated on a GPU, else this
    process's resident-set high-water mark (VmHWM on Linux, ru_maxrss elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # bytes on macOS, KiB on Linux


def reset_peak(device: torch.device | str = "cpu") -> None:
    """Start a new peak (`peak`) here: a study measures each cell apart in one process."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux >= 4.0: "5" resets VmHWM to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def gib(n: int | float) -> str:
    return f"{n / GIB:.1f} GiB"
