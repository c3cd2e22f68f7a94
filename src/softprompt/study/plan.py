"""What a study runs: its settings (`StudyConfig`) and its cells (model x series x task x seed).

Three studies, after Lester et al. (2021):
  scale:  the series is the method (prompt, model, lora, zero-shot): Fig. 1, score against
          model size, and the gap to model tuning;
  length: the series is the prompt length (1, 5, 20, 100, 150), prompt tuning: Fig. 3(a);
  init:   the series is the initialisation (uniform, vocab, labels), prompt tuning: Fig. 3(b).
Every cell trains the same number of steps with the same batches (same seed, same data
order), evaluates once at the last step on the same dev sample, and is written on its own.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

from softprompt.config import Init, Method, TrainConfig, helped, parse_seeds, same_as
from softprompt.errors import ConfigError
from softprompt.models.loading import SHORT_NAMES
from softprompt.tasks import get_task, task_names


class Kind(str, enum.Enum):
    SCALE = "scale"
    LENGTH = "length"
    INIT = "init"


# The methods that train the model's weights, in the order a study runs them after the others: the
# last cell of each model trains its loaded weights in place (no copy, see tuning.py), and model
# tuning, which needs the most memory, is the one that gets that saving.
WEIGHT_METHODS = (Method.LORA.value, Method.MODEL.value)

DEFAULT_MODELS = "smollm2-135m,gemma3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b"
LENGTHS = "1,5,20,100,150"  # Fig. 3(a)
INITS = "uniform,vocab,labels"  # Fig. 3(b): random uniform, sampled vocabulary, class label
METHODS = ",".join(m.value for m in Method)
# Settings added after studies had run: a finished cell that does not record one was made at this value.
LATER_SETTINGS = {"length_scaled_lr": False}


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a study; each is a `softprompt study` flag of the same name."""

    models: str = helped(DEFAULT_MODELS, "Comma list of models (short names, folders), smallest first.")
    tasks: str = helped("sst2,rte", "Comma list of tasks with a train split.")
    methods: str = helped(METHODS, "study scale: comma list of methods (prompt, model, lora, zero-shot).")
    lengths: str = helped(LENGTHS, "study length: comma list of prompt lengths.")
    inits: str = helped(INITS, "study init: comma list of initialisations (uniform, vocab, labels).")
    seeds: str = helped("0", "Comma list of seeds: each cell runs once per seed (error bars: their spread).")
    steps: int = helped(30, "Training steps of every cell, the same for every method.")
    batch_size: int = helped(8, "Examples per step.")
    prompt_length: int = helped(20, "Prompt length of the prompt methods (study scale and init).")
    max_train: int | None = helped(None, "Train on at most N examples per task (seeded sample).")
    max_eval: int | None = helped(100, "Evaluate on at most N dev examples per task (seeded sample).")
    eval_batch_size: int = helped(16, "Examples per dev evaluation batch.")
    activation_checkpointing: bool = same_as(TrainConfig, "activation_checkpointing")
    length_scaled_lr: bool = same_as(TrainConfig, "length_scaled_lr")

    def __post_init__(self) -> None:
        parse_seeds(self.seeds)
        for name in ("models", "tasks"):
            if not split(getattr(self, name)):
                raise ConfigError(f"--{name}: expected a comma list, got {getattr(self, name)!r}")
        unknown = [t for t in split(self.tasks) if t not in task_names()]
        if unknown:
            raise ConfigError(f"--tasks: unknown task {', '.join(unknown)} (see `softprompt tasks`)")
        for t in split(self.tasks):
            if "train" not in get_task(t).splits:
                raise ConfigError(f"--tasks: {t} has no train split")
        for m in split(self.methods):
            if m not in {x.value for x in Method}:
                raise ConfigError(f"--methods: unknown method {m!r} (expected {METHODS})")
        for i in split(self.inits):
            if i not in (Init.UNIFORM.value, Init.VOCAB.value, Init.LABELS.value):
                raise ConfigError(f"--inits: unknown initialisation {i!r} (expected {INITS})")
        try:
            lengths = [int(x) for x in split(self.lengths)]
        except ValueError:
            raise ConfigError(f"--lengths: expected comma-separated integers, got {self.lengths!r}") from None
        if not lengths or min(lengths) < 1:
            raise ConfigError(f"--lengths: expected positive integers, got {self.lengths!r}")
        self.train_config(Cell("m", "prompt", "t", 0))  # rejects bad steps, batch size ... with the flag's name

    def train_config(self, cell: "Cell") -> TrainConfig:
        """One evaluation, at the last step (no selection on the reported dev sample); ema off
        so that every method keeps what its last step made."""
        return TrainConfig(
            method=cell.method,
            steps=self.steps,
            batch_size=self.batch_size,
            prompt_length=cell.prompt_length or self.prompt_length,
            init=cell.init or Init.AUTO.value,
            seed=cell.seed,
            eval_every=self.steps,
            max_eval=None,  # the study draws its dev sample itself (the same for every cell)
            max_train=self.max_train,
            eval_batch_size=self.eval_batch_size,
            ema=0.0,
            embed_step=0,
            activation_checkpointing=self.activation_checkpointing,
            length_scaled_lr=self.length_scaled_lr,
        )

    def settings(self) -> dict:
        """What a finished cell must have been made with to be reused (beside its own coordinates)."""
        kept = ("steps", "batch_size", "max_train", "max_eval", "length_scaled_lr")
        return {k: v for k, v in asdict(self).items() if k in kept}


@dataclass(frozen=True)
class Cell:
    """One training run of a study. `series` is what the figure draws one line per."""

    model: str
    method: str
    task: str
    seed: int
    prompt_length: int | None = None
    init: str | None = None

    def series(self, kind: str) -> str:
        return {Kind.SCALE.value: self.method, Kind.LENGTH.value: str(self.prompt_length), Kind.INIT.value: self.init}[
            kind
        ]

    def folder(self, kind: str) -> str:
        """Where its run lives under the study folder: model/series/task/seedN."""
        return f"{safe(self.model)}/{self.series(kind)}/{self.task}/seed{self.seed}"


def split(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def safe(name: str) -> str:
    """A model name as one folder name."""
    return name if name in SHORT_NAMES else name.strip("/").replace("/", "_").replace(".", "_") or "model"


def plan(kind: str, cfg: StudyConfig) -> list[Cell]:
    """The cells of study `kind`, grouped by model (each model loads once), smallest first; within
    a model the weight-tuning methods come last (WEIGHT_METHODS), the others in the order given."""
    seeds = parse_seeds(cfg.seeds)
    if kind == Kind.SCALE.value:
        methods = sorted(split(cfg.methods), key=lambda m: WEIGHT_METHODS.index(m) + 1 if m in WEIGHT_METHODS else 0)
        series = [dict(method=m, prompt_length=cfg.prompt_length) for m in methods]
    elif kind == Kind.LENGTH.value:
        series = [dict(method=Method.PROMPT.value, prompt_length=int(n)) for n in split(cfg.lengths)]
    elif kind == Kind.INIT.value:
        series = [dict(method=Method.PROMPT.value, prompt_length=cfg.prompt_length, init=i) for i in split(cfg.inits)]
    else:
        raise ConfigError(f"study {kind!r}: expected one of {', '.join(k.value for k in Kind)}")
    return [
        Cell(model, task=task, seed=seed, **s)
        for model in split(cfg.models)
        for s in series
        for task in split(cfg.tasks)
        for seed in seeds
    ]
