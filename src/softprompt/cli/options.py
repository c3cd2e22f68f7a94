"""Command-line options, each declared once.

An option that sets a config field is derived from the field: `from_field(TrainConfig, "lr")`
is `Annotated[float, typer.Option(help=<the field's help>)]`, and its default is the field's,
read through `TRAIN.lr` (likewise `BENCH`, `MODEL`). A command whose default differs (e.g.
`transfer --steps 100`) writes its own default and shares the help. `config_from` builds a
config from a command's parameters by field name.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import typer

from softprompt.bench.suite import BenchConfig
from softprompt.config import ModelConfig, SpotConfig, TrainConfig, default_of, help_of


def from_field(cls: type, name: str, *param_decls: str, help: str | None = None, with_help: bool = True) -> Any:
    """The option for field `name` of dataclass `cls`: its type, and its help text unless `help`
    replaces it (a command-specific meaning) or `with_help` is False. Flags are `param_decls`,
    else derived from the parameter name as typer does."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    if (isinstance(hint, types.UnionType) or typing.get_origin(hint) is Union) and type(None) in args:
        hint = Optional[next(a for a in args if a is not type(None))]
    text = help if help is not None else (help_of(cls, name) if with_help else None)
    return Annotated[hint, typer.Option(*param_decls, help=text)]


def defaults(cls: type) -> types.SimpleNamespace:
    """The field defaults of dataclass `cls`, as attributes (choices as their string values)."""
    return types.SimpleNamespace(**{f.name: default_of(cls, f.name) for f in fields(cls)})


def config_from(cls: type, params: Mapping[str, Any], **overrides: Any) -> Any:
    """`cls` built from a command's parameters (e.g. `locals()`) by field name, others ignored."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in {**params, **overrides}.items() if k in names})


MODEL = defaults(ModelConfig)
TRAIN = defaults(TrainConfig)
BENCH = defaults(BenchConfig)
SPOT = defaults(SpotConfig)

# -- the model, the task and the user's data files ---------------------------------------------

ModelOpt = from_field(ModelConfig, "model", "--model", "-m")
PrecisionOpt = from_field(ModelConfig, "precision")
MemoryCheckOpt = from_field(ModelConfig, "memory_check")
TaskOpt = Annotated[
    Optional[str],
    typer.Option(
        "--task",
        "-t",
        help="Built-in task name (see `softprompt tasks`), or a name for your own --train-file/--dev-file task.",
    ),
]
_DATA_FORMATS = (
    "a .csv, .tsv, .jsonl or .parquet file, a `datasets` save_to_disk folder, or a Hugging Face "
    "dataset name[:config][:split] (needs `pip install 'softprompt[data]'` and the network)"
)
TrainFileOpt = Annotated[Optional[Path], typer.Option(help=f"Your own training data: {_DATA_FORMATS}.")]
DevFileOpt = Annotated[Optional[Path], typer.Option(help=f"Your own dev/eval data: {_DATA_FORMATS}.")]
TextFieldOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--text-field",
        help="Input field(s) of your data file; repeat for several.",
    ),
]
LabelFieldOpt = Annotated[str, typer.Option(help="Label field of your data file.")]
LabelsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--labels",
        help="Label words of your task: '0=negative,1=positive' (omit for a generation task).",
    ),
]
TemplateOpt = Annotated[Optional[str], typer.Option(help="Input template over your fields, e.g. 'review: {text}'.")]
PromptOpt = Annotated[
    Path,
    typer.Option(
        "--prompt",
        "-p",
        help="Prompt folder (a training output folder, its best/, or a PEFT adapter folder).",
    ),
]

# -- training (TrainConfig) ---------------------------------------------------------------------

MethodOpt = from_field(TrainConfig, "method")
ActivationCheckpointingOpt = from_field(TrainConfig, "activation_checkpointing")
LoraRankOpt = from_field(TrainConfig, "lora_rank")
LoraAlphaOpt = from_field(TrainConfig, "lora_alpha")
LoraTargetsOpt = from_field(TrainConfig, "lora_targets")
StepsOpt = from_field(TrainConfig, "steps")
BatchSizeOpt = from_field(TrainConfig, "batch_size")
PromptLengthOpt = from_field(TrainConfig, "prompt_length")
InitOpt = from_field(TrainConfig, "init")
InitTextOpt = from_field(TrainConfig, "init_text")
InitFromOpt = from_field(TrainConfig, "init_from")
OptimizerOpt = from_field(TrainConfig, "optimizer")
LossOpt = from_field(TrainConfig, "loss")
LrOpt = from_field(TrainConfig, "lr")
LengthScaledLrOpt = from_field(TrainConfig, "length_scaled_lr")
DecayOpt = from_field(TrainConfig, "decay")
TimeBudgetOpt = from_field(TrainConfig, "time_budget")
MaxInputTokensOpt = from_field(TrainConfig, "max_input_tokens")
TruncationOpt = from_field(TrainConfig, "truncation")
ReparamOpt = from_field(TrainConfig, "reparam")
ReparamBottleneckOpt = from_field(TrainConfig, "reparam_bottleneck")
WeightDecayOpt = from_field(TrainConfig, "weight_decay")
WarmupStepsOpt = from_field(TrainConfig, "warmup_steps")
GradAccumOpt = from_field(TrainConfig, "grad_accum")
SeedOpt = from_field(TrainConfig, "seed", with_help=False)  # `train --seed` has never shown a help text
EmaOpt = from_field(TrainConfig, "ema")
EvalEveryOpt = from_field(TrainConfig, "eval_every")
MaxEvalOpt = from_field(TrainConfig, "max_eval")
MaxTrainOpt = from_field(TrainConfig, "max_train")
MinTrainWordsOpt = from_field(TrainConfig, "min_train_words")
PatienceOpt = from_field(TrainConfig, "patience")
EmbedStepOpt = from_field(TrainConfig, "embed_step")
CheckpointEveryOpt = from_field(TrainConfig, "checkpoint_every")
MixtureCapOpt = Annotated[
    Optional[int],
    typer.Option(
        help="Mixture: a task counts for at most K examples in the examples-proportional mixing rates.",
    ),
]

# -- bench (BenchConfig: its own init choices, seeds and dev sampling) -------------------------

BenchInitOpt = from_field(BenchConfig, "init")
BenchMaxEvalOpt = from_field(BenchConfig, "max_eval")
BenchSeedsOpt = Annotated[str, typer.Option(help=help_of(BenchConfig, "seeds"))]

# -- SPoT: libraries, seeds, similarity -------------------------------------------------------

_LIBRARY_HELP = "Prompt library folder (see softprompt.spot.library); where optional, default: the built-in library."
LibraryOpt = Annotated[Path, typer.Option("--library", "-l", help=_LIBRARY_HELP)]
OptLibraryOpt = Annotated[Optional[Path], typer.Option("--library", "-l", help=_LIBRARY_HELP)]
SeedsOpt = Annotated[str, typer.Option(help="Comma list of seeds; every initialisation runs with each.")]
TargetStepsOpt = from_field(TrainConfig, "steps", help="Target training steps (the same for every initialisation).")
MeasureOpt = from_field(SpotConfig, "measure")
EmbeddingOpt = from_field(SpotConfig, "embedding")
LearnedFirstOpt = from_field(SpotConfig, "learned_first")
BuiltinOpt = Annotated[
    bool,
    typer.Option(
        "--builtin",
        help="The built-in library shipped with softprompt (softprompt/pretrained/<model>, or $SOFTPROMPT_PRETRAINED).",
    ),
]

# -- several processes (torchrun) -----------------------------------------------------------

NprocOpt = Annotated[
    int,
    typer.Option(
        help="Data-parallel workers on this machine: runs the same command under torchrun (gloo on CPU, NCCL with "
        "one GPU each); every worker takes its share of each batch and the result equals one process's. "
        "Under torchrun itself leave it at 1.",
    ),
]
ShardModelOpt = Annotated[
    bool,
    typer.Option(
        help="Under torchrun: shard the frozen model's layers over the workers (FSDP2) so a model larger than one "
        "device fits; every worker then runs every row (no speed-up).",
    ),
]
