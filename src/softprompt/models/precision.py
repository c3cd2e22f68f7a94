"""Choose the frozen weights' precision by measuring, not by guessing from the CPU name.

bf16 pays off only where the hardware multiplies bf16 natively and faster than fp32:
on CPUs with AMX, bf16 matmuls run ~4x fp32; on some AVX512-BF16 parts they run slower
than fp32 (oneDNN converts and falls back); without either they are emulated. Which
case a machine is in is not visible from `torch.backends.cpu.get_cpu_capability()`
(it says "AVX512" on AMX machines too), so `--precision auto` runs a short matmul probe,
fp32 against bf16 on the device in use (a few tens of milliseconds, once per process,
device and thread count), and picks bf16 only where it is clearly faster.

On CUDA, bf16 is chosen wherever the GPU supports it (`torch.cuda.is_bf16_supported()`,
tensor cores run it at least as fast as fp32/TF32); the rates are still measured and
reported.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field

import torch

from softprompt.errors import ModelError
from softprompt.models import attention

# bf16 must beat fp32 by this factor in the probe before auto picks it. A model step is not
# only matmuls: the prompt and the logits are cast between fp32 and bf16, and the
# elementwise ops (norms, softmax, activations) are no faster in bf16 on a CPU, so a small
# matmul win shrinks end to end; bf16 also costs accuracy (8-bit mantissa), and a short
# probe on a shared machine jitters by 10-20 %. 1.3x keeps "about equal" on fp32 while
# every real bf16 win seen (AMX ~4x, Zen 4 AVX512-BF16 ~4x) clears it easily.
MARGIN = 1.3

# /proc/cpuinfo flags that mean bf16 arithmetic is native (x86 AMX / AVX512-BF16 /
# AVX-NE-CONVERT, Arm "bf16"); the ones listed in reports.
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx_ne_convert", "bf16")
REPORT_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "avx_ne_convert", "bf16")

CHOICES = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class PrecisionChoice:
    """What `--precision` resolved to on one device, and why.

    Attributes:
        requested: "auto", "bf16" or "fp32" as the user asked.
        dtype: The frozen weights' dtype.
        device: The device it was chosen for ("cpu", "cuda:0", ...).
        reason: One phrase, e.g. "bf16 is 4.2x faster here" or "requested".
        fp32_gflops, bf16_gflops: Probe rates (None when nothing was measured).
        cpu_flags: The bf16-relevant /proc/cpuinfo flags (empty where unreadable).
    """

    requested: str
    dtype: torch.dtype
    device: str
    reason: str
    fp32_gflops: float | None = None
    bf16_gflops: float | None = None
    cpu_flags: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"


@dataclass(frozen=True)
class Rates:
    """Measured matmul throughput on one device, GFLOP/s."""

    fp32: float
    bf16: float
    size: int
    seconds: float  # wall time the probe took


# -- hardware facts ----------------------------------------------------------------------


def cpu_flags(path: str = "/proc/cpuinfo") -> tuple[str, ...] | None:
    """The bf16-relevant CPU flags (sorted), or None where /proc/cpuinfo is unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(value.split())
    return tuple(sorted(f for f in found if f in REPORT_FLAGS))


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bf16_supported(device: torch.device, flags: tuple[str, ...] | None = None) -> bool | None:
    """Whether bf16 is native on `device`: True/False, or None where it cannot be told
    (no /proc/cpuinfo): then the measurement alone decides."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return None
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    return any(f in BF16_FLAGS for f in flags)


# -- the probe ---------------------------------------------------------------------------

_RATES: dict[tuple[str, int], Rates] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    device: torch.device, size: int | None = None, rounds: int = 5, reps: int = 2, budget_s: float = 0.25
) -> Rates:
    """GFLOP/s of a square `size` matmul in fp32 and in bf16 on `device` (uncached).

    One warm-up each, then `rounds` interleaved rounds of `reps` matmuls per dtype; the best
    round per dtype counts (a short probe on a shared machine is only ever slowed down).
    Stops early after two rounds once `budget_s` is spent.
    """
    device = torch.device(device)
    size = size or (2048 if device.type == "cuda" else 512)
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(size, size, generator=gen) for _ in range(2)]
    pairs = {dt: [t.to(device=device, dtype=dt) for t in base] for dt in (torch.float32, torch.bfloat16)}
    best = {dt: float("inf") for dt in pairs}
    started = time.perf_counter()
    for a, b in pairs.values():  # warm-up: kernel selection, page faults, oneDNN JIT
        torch.mm(a, b)
    _sync(device)
    for round_ in range(rounds):
        for dt, (a, b) in pairs.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            _sync(device)
            best[dt] = min(best[dt], time.perf_counter() - t0)
        if round_ >= 1 and time.perf_counter() - started > budget_s:
            break
    flop = 2 * size**3 * reps
    return Rates(
        fp32=flop / best[torch.float32] / 1e9,
        bf16=flop / best[torch.bfloat16] / 1e9,
        size=size,
        seconds=time.perf_counter() - started,
    )


def probe(device: torch.device | str) -> Rates:
    """`measure(device)`, once per process, device and thread count."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (str(device), torch.get_num_threads())
    if key not in _RATES:
        _RATES[key] = measure(device)
    return _RATES[key]


def clear_cache() -> None:
    _RATES.clear()


# -- the decision ------------------------------------------------------------------------


def decide(
    fp32_gflops: float,
    bf16_gflops: float,
    bf16_supported: bool | None,
    device_type: str = "cpu",
    margin: float = MARGIN,
) -> tuple[torch.dtype, str]:
    """(dtype, reason) for `--precision auto` from the two measured rates.

    `bf16_supported`: True/False from the hardware, None when unknown (rates decide).
    On CUDA, support decides (bf16 runs on tensor cores wherever it is supported).
    """
    if device_type == "cuda":
        if bf16_supported:
            return torch.bfloat16, "bf16 is supported on this GPU"
        return torch.float32, "this GPU has no bf16 support"
    if bf16_supported is False:
        return torch.float32, "no native bf16 on this CPU"
    ratio = bf16_gflops / fp32_gflops if fp32_gflops > 0 else float("inf")
    if ratio >= margin:
        return torch.bfloat16, f"bf16 is {ratio:.1f}x faster here"
    if ratio >= 1.0:
        return torch.float32, f"bf16 is only {ratio:.2f}x faster here (auto needs {margin:.1f}x)"
    return torch.float32, "bf16 is not faster here"


def choose(precision: str, device: torch.device | str) -> PrecisionChoice:
    """Resolve `--precision` ("auto" | "bf16" | "fp32") for `device`; "auto" runs the probe."""
    if precision not in CHOICES:
        raise ModelError(f"--precision {precision!r}: expected auto, bf16 or fp32")
    device = torch.device(device)
    flags = cpu_flags() if device.type == "cpu" else None
    shown_flags = tuple(f for f in (flags or ()) if f in BF16_FLAGS)
    if precision != "auto":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        return PrecisionChoice(precision, dtype, str(device), "requested", cpu_flags=shown_flags)
    rates = probe(device)
    dtype, reason = decide(rates.fp32, rates.bf16, bf16_supported(device, flags), device.type)
    return PrecisionChoice("auto", dtype, str(device), reason, rates.fp32, rates.bf16, shown_flags)


def describe(choice: PrecisionChoice) -> str:
    """One line, e.g. `precision auto -> fp32 on cpu: bf16 matmul 146 GFLOP/s vs fp32 260
    GFLOP/s (avx512_bf16; bf16 is not faster here)`."""
    head = f"precision {choice.requested} -> {choice.name} on {choice.device}"
    notes = "; ".join(
        x
        for x in (
            ",".join(choice.cpu_flags) or ("" if choice.device.startswith("cuda") else "no bf16 cpu flags"),
            choice.reason,
        )
        if x
    )
    if choice.fp32_gflops is None or choice.bf16_gflops is None:
        return f"{head} ({notes})"
    return f"{head}: bf16 matmul {choice.bf16_gflops:.0f} GFLOP/s vs fp32 {choice.fp32_gflops:.0f} GFLOP/s ({notes})"


def report(device: torch.device | str | None = None) -> str:
    """Multi-line text for `softprompt info`: versions, device, CPU flags, threads, the probe's
    rates and what `--precision auto` picks and why."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    flags = cpu_flags()
    choice = choose("auto", device)
    rates = probe(device)
    lines = [
        f"torch {torch.__version__} (cpu capability {torch.backends.cpu.get_cpu_capability()})",
        f"device {choice.device}"
        + (f": {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f": {cpu_model()}"),
        "cpu flags: "
        + (
            " ".join(flags)
            if flags
            else ("none of " + ", ".join(BF16_FLAGS) if flags is not None else "unknown (no /proc/cpuinfo)")
        ),
        f"threads {torch.get_num_threads()} (of {os.cpu_count()} cpus)",
        f"matmul {rates.size}x{rates.size}: fp32 {rates.fp32:.0f} GFLOP/s, bf16 {rates.bf16:.0f} GFLOP/s "
        f"(bf16/fp32 {rates.bf16 / rates.fp32:.2f}x, probe {1000 * rates.seconds:.0f} ms)",
        f"--precision auto -> {choice.name}: {choice.reason}",
    ]
    att = attention.choose("auto", device, choice.dtype)
    lines.append(f"{attention.describe(att)} (9 heads x 64, {choice.name}; the model's own shape decides at load)")
    return "\n".join(lines)
