"""Settings, each written once: its type, default, allowed values and help text.

`TrainConfig` is what `train()` takes; the command line derives its flags from these
fields (cli/options.py reads `field.metadata["help"]` and the defaults), so a flag's
default and help live here and nowhere else. Choices are string enums; the config stores
their plain string values, so settings compare and serialise as strings.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from softprompt.errors import ConfigError


class Optimizer(str, enum.Enum):
    ADAFACTOR = "adafactor"
    ADAMW = "adamw"


class Loss(str, enum.Enum):
    RANK = "rank"
    LM = "lm"
    RANK_LM = "rank+lm"


class Init(str, enum.Enum):
    AUTO = "auto"  # class labels for classification tasks, else vocab
    VOCAB = "vocab"
    UNIFORM = "uniform"
    LABELS = "labels"
    TEXT = "text"
    FILE = "file"


class Reparam(str, enum.Enum):
    NONE = "none"  # the paper's plain prompt
    RESIDUAL = "residual"  # Razdaibiedina et al. (2023), see reparam.py


class Decay(str, enum.Enum):
    CONSTANT = "constant"  # the paper
    LINEAR = "linear"
    COSINE = "cosine"


class Truncation(str, enum.Enum):
    HEAD = "head"  # keep the start
    TAIL = "tail"  # keep the end
    HEAD_TAIL = "head+tail"  # keep a quarter from the start and the rest from the end (truncate.py)


class Method(str, enum.Enum):
    PROMPT = "prompt"  # a P x H soft prompt on the frozen model (Lester et al.)
    MODEL = "model"  # every weight trains (the paper's model-tuning baseline)
    LORA = "lora"  # low-rank adapters through PEFT
    ZERO_SHOT = "zero-shot"  # nothing trains: the initial prompt evaluated as it is


# Each method's default learning rate (--lr unset): the paper's 0.3 for prompts, a small one for
# every weight, PEFT's usual 1e-3 for LoRA.
METHOD_LR = {Method.PROMPT.value: 0.3, Method.MODEL.value: 3e-5, Method.LORA.value: 1e-3, Method.ZERO_SHOT.value: 0.3}
# The prompt length the paper's lr 0.3 goes with (its default P); --length-scaled-lr keeps a step's
# total size at that length's for longer prompts.
LR_REFERENCE_LENGTH = 20


class Precision(str, enum.Enum):
    AUTO = "auto"
    BF16 = "bf16"
    FP32 = "fp32"


# Fixed, not a fraction of --steps, so runs of any length give comparable task embeddings (SPoT);
# the default of the command line and of `train()` alike (`embed_step_for`).
DEFAULT_EMBED_STEP = 10
# Defaults of the SPoT commands where they differ from TrainConfig's (short target runs).
TRANSFER_STEPS = 100
TRANSFER_EVAL_EVERY = 50
TRANSFER_SEEDS = "0,1,2"
AUTO_TOP_K = 3  # `transfer --auto` without --top-k
SIMILAR_MAX_EVAL = 32  # `similar` evaluates its short embedding run on a small dev sample


def helped(default: Any, text: str) -> Any:
    """A dataclass field with a default and its help text (the flag's help)."""
    return field(default=default, metadata={"help": text})


def help_of(cls: type, name: str) -> str | None:
    """The help text of field `name` of dataclass `cls`."""
    return _field(cls, name).metadata.get("help")


def default_of(cls: type, name: str) -> Any:
    """The default of field `name` of dataclass `cls` (an enum member as its value)."""
    f = _field(cls, name)
    value = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
    if value is MISSING:
        raise TypeError(f"{cls.__name__}.{name} has no default")
    return value.value if isinstance(value, enum.Enum) else value


def same_as(cls: type, name: str) -> Any:
    """A field with the default and help of `cls`'s field `name` (settings shared by two configs)."""
    return helped(default_of(cls, name), help_of(cls, name))


def _field(cls: type, name: str):
    for f in fields(cls):
        if f.name == name:
            return f
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def choice(kind: type[enum.Enum], value: Any, message: str) -> str:
    """`value` as the string value of one of `kind`'s members, else ConfigError(message)."""
    try:
        return kind(value).value
    except ValueError:
        raise ConfigError(message) from None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([smh])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str, flag: str = "--time-budget") -> float:
    """Seconds of a duration written like 90s, 10m or 1.5h."""
    match = _DURATION.match(str(text))
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else 0.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{flag}: expected a duration like 90s, 10m or 1h, got {text!r}")
    return seconds


def parse_seeds(text: str) -> tuple[int, ...]:
    """--seeds: a comma list of distinct integers."""
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds:
        raise ConfigError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct integers like 0,1,2, got {text!r}")
    return seeds


@dataclass
class ModelConfig:
    """The frozen model: what `load_model(model, precision)` takes (and validates)."""

    model: str | None = helped(
        None,
        "Short name (smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b), HF model folder, "
        ".gguf file or hub name. Default: the embedded SmolLM2-135M-Instruct.",
    )
    precision: str = helped(
        Precision.AUTO.value, "Frozen-weight precision: auto (bf16 where the CPU/GPU runs it natively), bf16 or fp32."
    )
    memory_check: bool = helped(
        True,
        "Before loading, estimate the peak memory of the model and --method and refuse one that cannot fit "
        "(--no-memory-check: try anyway).",
    )


@dataclass
class TrainConfig:
    """Training settings; each is a `softprompt train` flag of the same name."""

    method: str = helped(
        Method.PROMPT.value,
        "What trains: prompt (a soft prompt, frozen model) | model (every weight, in fp32; writes "
        "best/model/) | lora (PEFT LoRA adapters; writes best/adapter/) | zero-shot (nothing: the "
        "initial prompt, class labels by default, evaluated as it is).",
    )
    steps: int = helped(500, "Optimizer steps.")
    batch_size: int = helped(16, "Examples per step (before accumulation).")
    prompt_length: int = helped(20, "Prompt tokens P (paper: 1, 5, 20, 100, 150).")
    init: str = helped(Init.AUTO.value, "auto | vocab (5,000 commonest tokens) | uniform | labels | text | file.")
    init_text: str | None = helped(None, "Text to initialise from (--init text).")
    init_from: str | None = helped(
        None,
        "Saved prompt folder to start from (transfer); on the command line also builtin:NAME, an entry "
        "of the built-in library for the loaded model (`softprompt library list --builtin`), e.g. builtin:sst2.",
    )
    optimizer: str = helped(Optimizer.ADAFACTOR.value, "adafactor (paper) or adamw.")
    loss: str = helped(
        Loss.RANK_LM.value,
        "rank: cross-entropy over the task's labels, each scored as evaluation "
        "ranks it (generation rows: lm) | lm: cross-entropy of the target over the "
        "whole vocabulary (the paper's text-to-text loss) | rank+lm: their sum.",
    )
    reparam: str = helped(
        Reparam.NONE.value,
        "none: the prompt matrix is trained directly (the paper) | residual: it passes through a "
        "shallow MLP with a skip connection while training (Residual Prompt Tuning), folded "
        "back into a plain prompt for evaluation and saving.",
    )
    reparam_bottleneck: int = helped(128, "Width of the residual MLP's bottleneck (--reparam residual).")
    lr: float | None = helped(
        None,
        "Learning rate, constant after warm-up (default per --method: prompt 0.3 as the paper, model 3e-5, "
        "lora 1e-3).",
    )
    length_scaled_lr: bool = helped(
        False,
        f"Prompt method: scale --lr by min(1, sqrt({LR_REFERENCE_LENGTH} / P)), so that a step moves a "
        f"P-token prompt as far in total (norm) as a {LR_REFERENCE_LENGTH}-token one at --lr (Adafactor moves "
        "every number by about lr): prompts longer than 20 tokens get a smaller lr, others are unchanged.",
    )
    weight_decay: float = helped(1e-5, "Weight decay (paper: 1e-5).")
    warmup_steps: int = helped(0, "Linear warm-up steps.")
    decay: str = helped(
        Decay.CONSTANT.value,
        "lr after warm-up: constant (paper) | linear or cosine decay to 0 at the last step.",
    )
    time_budget: str | None = helped(
        None,
        "Train for about this long (90s, 10m, 1h; counted from the start of training, dev "
        "evaluations included): the step count is set from the speed measured over the first "
        "steps and evaluations, replacing --steps, and is written to the log and the output.",
    )
    grad_accum: int = helped(1, "Gradient accumulation micro-batches per step.")
    seed: int = helped(0, "Seed of the prompt initialisation and the data order.")
    eval_every: int = helped(100, "Evaluate on dev every N steps (best on dev is kept).")
    max_eval: int | None = helped(None, "Evaluate on at most N dev examples (seeded sample).")
    eval_batch_size: int = helped(32, "Examples per dev evaluation batch.")
    patience: int | None = helped(None, "Early stop after N evaluations without improvement.")
    checkpoint_every: int = helped(
        25,
        "Write OUT/checkpoint every N steps (and at every evaluation, and when "
        "stopped by Ctrl-C or SIGTERM), so a crash loses at most N-1 steps.",
    )
    max_train: int | None = helped(None, "Train on at most N examples (seeded sample).")
    min_train_words: int | None = helped(
        None,
        "Train only on examples whose input fields hold at least N words together (SST-2's train split is "
        "mostly phrases of a few words, its dev split whole sentences of about 19). Dev is never filtered.",
    )
    max_input_tokens: int = helped(
        256, "Longest input in tokens; longer ones are shortened (--truncation), the template's own text kept."
    )
    truncation: str = helped(
        Truncation.HEAD_TAIL.value,
        "How an input over --max-input-tokens is shortened: only the example's fields are cut, "
        "never the template's text (the label cue after the input stays), longest field first, "
        "keeping its head, its tail, or head+tail (a quarter from the start, the rest from the "
        "end: best for reviews, whose verdict often comes last).",
    )
    length_normalize: bool = helped(False, "Rank labels by mean rather than total token log-likelihood.")
    fast: bool = helped(True, "Use the fast scoring path (prompt KV cache).")
    ema: float = helped(
        0.99,
        "Evaluate and keep an exponential moving average of the prompt over steps, with this "
        "decay (0: the raw prompt, as in the paper). It damps the dev-score swings of a "
        "constant lr 0.3.",
    )
    activation_checkpointing: bool = helped(
        False,
        "Recompute each layer's activations during the backward pass instead of keeping them: "
        "far less memory for large models and batches, about a third more time (trains through the "
        "plain scoring path, which needs no key/value cache).",
    )
    lora_rank: int = helped(8, "LoRA rank r (--method lora).")
    lora_alpha: int = helped(16, "LoRA scaling alpha (--method lora): updates are scaled by alpha / r.")
    lora_targets: str = helped(
        "all-linear",
        "Modules LoRA adapts (--method lora): all-linear (every linear projection but the output head) "
        "or a comma list of module names such as q_proj,v_proj.",
    )
    # None: the default step (`embed_step_for`: DEFAULT_EMBED_STEP steps' worth of lr, or the last step of a
    # shorter run); 0: none.
    embed_step: int | None = helped(
        None,
        "Save the prompt at this step as embedding/, the task embedding for "
        f"`softprompt similar` (the same step for every task; default "
        f"{DEFAULT_EMBED_STEP}, later after a warm-up: the step whose summed lr is {DEFAULT_EMBED_STEP} "
        "steps' at the full lr; the last step of a shorter run; 0: none).",
    )

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "batch_size",
            "prompt_length",
            "grad_accum",
            "eval_every",
            "eval_batch_size",
            "max_input_tokens",
            "checkpoint_every",
            "reparam_bottleneck",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.embed_step is not None and self.embed_step < 0:
            raise ConfigError(f"--embed-step must be 0 (none) or a step, got {self.embed_step}")
        for name in ("max_eval", "max_train", "min_train_words", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        self.method = choice(
            Method, self.method, f"--method {self.method!r}: expected one of {', '.join(m.value for m in Method)}"
        )
        if self.lr is None:
            self.lr = METHOD_LR[self.method]
        if self.lora_rank < 1 or self.lora_alpha < 1:
            raise ConfigError(
                f"--lora-rank and --lora-alpha must be at least 1, got {self.lora_rank}, {self.lora_alpha}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"--lr must be a positive number, got {self.lr}")
        for name in ("weight_decay", "ema"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        if not 0 <= self.ema < 1:
            raise ConfigError(f"--ema must be in [0, 1), got {self.ema}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError("--warmup-steps and --weight-decay must not be negative")
        self.optimizer = choice(
            Optimizer,
            self.optimizer,
            f"--optimizer {self.optimizer!r}: expected one of {', '.join(o.value for o in Optimizer)}",
        )
        self.loss = choice(Loss, self.loss, f"--loss {self.loss!r}: expected one of {', '.join(l.value for l in Loss)}")
        self.decay = choice(
            Decay, self.decay, f"--decay {self.decay!r}: expected one of {', '.join(d.value for d in Decay)}"
        )
        self.truncation = choice(
            Truncation,
            self.truncation,
            f"--truncation {self.truncation!r}: expected one of {', '.join(t.value for t in Truncation)}",
        )
        self.reparam = choice(
            Reparam, self.reparam, f"--reparam {self.reparam!r}: expected one of {', '.join(r.value for r in Reparam)}"
        )
        inits = ", ".join(i.value for i in Init if i is not Init.AUTO)
        self.init = choice(Init, self.init, f"--init {self.init!r}: expected auto or one of {inits}")
        if self.embed_step and self.embed_step > self.steps and self.time_budget is None:
            raise ConfigError(f"--embed-step {self.embed_step} is after the last step (--steps {self.steps})")


def effective_lr(cfg: TrainConfig) -> float:
    """The optimizer's lr: --lr, scaled down for prompts longer than LR_REFERENCE_LENGTH with
    --length-scaled-lr (a step's update norm grows as sqrt(P) when each number moves by ~lr)."""
    if cfg.length_scaled_lr and cfg.method == Method.PROMPT.value:
        return cfg.lr * min(1.0, math.sqrt(LR_REFERENCE_LENGTH / cfg.prompt_length))
    return cfg.lr


def lr_factor(step: int, warmup_steps: int, steps: int, decay: str) -> float:
    """The lr multiplier after `step` optimizer steps (0-based, as LambdaLR counts): a linear
    warm-up over `warmup_steps`, then constant, or a linear or cosine decay towards 0 at step `steps`."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if decay == Decay.CONSTANT.value:
        return 1.0
    done = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))  # the last step still moves
    return 1.0 - done if decay == Decay.LINEAR.value else 0.5 * (1.0 + math.cos(math.pi * done))


def embed_step_for(
    steps: int, embed_step: int | None = None, warmup_steps: int = 0, decay: str = Decay.CONSTANT.value
) -> int:
    """The step whose prompt is the task embedding: `embed_step` when given (0: none), else the
    step by which the prompt has trained as far as DEFAULT_EMBED_STEP steps at the full lr (the
    summed lr factors closest to DEFAULT_EMBED_STEP: step 10 without warm-up, 31 after a
    50-step warm-up), so embeddings of runs with and without warm-up compare; or the last step
    of a run shorter than that."""
    if embed_step is not None:
        return embed_step
    total, best, best_gap = 0.0, 1, math.inf
    for step in range(1, steps + 1):
        total += lr_factor(step - 1, warmup_steps, steps, decay)  # the lr of optimizer step `step`
        if abs(total - DEFAULT_EMBED_STEP) < best_gap:
            best, best_gap = step, abs(total - DEFAULT_EMBED_STEP)
        if total >= DEFAULT_EMBED_STEP:
            break
    return best


# -- SPoT: the built-in library build, the transfer study, task embeddings ---------------------


class Measure(str, enum.Enum):
    AVG_COSINE = "avg_cosine"  # cosine of the average prompt tokens (SPoT's "average-token")
    PER_TOKEN_COSINE = "per_token_cosine"  # mean cosine over every token pair


class EmbeddingAt(str, enum.Enum):
    EARLY = "early"  # the prompt at --embed-step (embedding/): SPoT's choice
    LATE = "late"  # the best prompt on dev (best/)


@dataclass
class SpotConfig:
    """How task embeddings are compared (`similar`, `transfer --auto`, the studies)."""

    measure: str = helped(
        Measure.AVG_COSINE.value, "Similarity: avg_cosine (cosine of average tokens) or per_token_cosine."
    )
    embedding: str = helped(
        EmbeddingAt.EARLY.value,
        "Task embedding: early (the prompt at --embed-step, SPoT) or late (the best prompt on dev). "
        "`softprompt embedding-study` measures which predicts transfer gain.",
    )
    learned_first: bool = helped(
        True,
        "Rank the library entries that beat their dev sample's constant baseline (entry.json \"chance\": "
        "they learned their task) before those that did not, then by similarity; --no-learned-first: "
        "by similarity alone.",
    )

    def __post_init__(self) -> None:
        self.measure = choice(
            Measure, self.measure, f"--measure {self.measure!r}: expected one of {', '.join(m.value for m in Measure)}"
        )
        self.embedding = choice(
            EmbeddingAt, self.embedding, f"--embedding {self.embedding!r}: expected early or late"
        )


# `library build`: every source to convergence (early stopping on its dev sample), at most
# LIBRARY_STEPS steps; batch 8 keeps one source under about 40 minutes on 2 cores.
LIBRARY_STEPS = 1000
LIBRARY_BATCH_SIZE = 8
LIBRARY_EVAL_EVERY = 50
# A linear warm-up: from sampled vocabulary (token rows of RMS 0.13) the first steps at the full
# lr 0.3 can throw a prompt off, and on the amx_bf16 Xeon they left SST-2, IMDB and CoLA at
# chance; warmed up, SST-2 reached 90.0 % (README, "Built-in library").
LIBRARY_WARMUP_STEPS = 50
LIBRARY_PATIENCE = 4
LIBRARY_MAX_EVAL = 200
LIBRARY_MIXTURE_CAP = 2000
# `transfer-study`: each target run to convergence, at most STUDY_STEPS steps.
STUDY_STEPS = 300
STUDY_BATCH_SIZE = 8
STUDY_EVAL_EVERY = 25
STUDY_PATIENCE = 3
STUDY_MAX_EVAL = 100
STUDY_SEEDS = "0,1,2,3,4,5"  # 6: with 5 paired seeds no exact two-sided test can reach p < 0.05
STUDY_TARGETS = "cb,rte,wsc,mrpc,boolq"
STUDY_TOP_K = 3
SIGNIFICANCE = 0.05  # the level at which a gain is called significant
