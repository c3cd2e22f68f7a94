"""`train`, `eval`, `predict`, `inspect` and `tasks`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from softprompt import distributed as dp
from softprompt.cli import runtime
from softprompt.cli.options import (
    MODEL,
    ActivationCheckpointingOpt,
    TRAIN,
    BatchSizeOpt,
    CheckpointEveryOpt,
    DecayOpt,
    DevFileOpt,
    EmaOpt,
    EmbedStepOpt,
    EvalEveryOpt,
    GradAccumOpt,
    InitFromOpt,
    InitOpt,
    InitTextOpt,
    LabelFieldOpt,
    LabelsOpt,
    LengthScaledLrOpt,
    LoraAlphaOpt,
    LoraRankOpt,
    LoraTargetsOpt,
    LossOpt,
    LrOpt,
    MaxEvalOpt,
    MaxInputTokensOpt,
    MaxTrainOpt,
    MemoryCheckOpt,
    MethodOpt,
    MinTrainWordsOpt,
    MixtureCapOpt,
    ModelOpt,
    OptimizerOpt,
    PatienceOpt,
    PrecisionOpt,
    PromptLengthOpt,
    PromptOpt,
    ReparamBottleneckOpt,
    ReparamOpt,
    SeedOpt,
    StepsOpt,
    TaskOpt,
    TemplateOpt,
    TextFieldOpt,
    TimeBudgetOpt,
    TrainFileOpt,
    TruncationOpt,
    WarmupStepsOpt,
    WeightDecayOpt,
    NprocOpt,
    ShardModelOpt,
    config_from,
)
from softprompt.config import Precision, TrainConfig
from softprompt.ensemble import evaluate_ensemble
from softprompt.errors import SoftPromptError
from softprompt.evaluate import evaluate, input_cut
from softprompt.evaluate import predict as run_predict
from softprompt.inspect import nearest_tokens
from softprompt.io import WEIGHT_METHODS, write_report_json
from softprompt.models import memory
from softprompt.models.precision import report as precision_report
from softprompt.scoring import PromptedLM
from softprompt.tasks import dev_sample, get_task, task_names
from softprompt.tasks.base import Example
from softprompt.tasks.crosstask import task_for_prompt
from softprompt.train import train as run_train


def train(
    task: Annotated[
        Optional[str],
        typer.Option(
            "--task",
            "-t",
            help="Built-in task name (see `softprompt tasks`), a comma list of them trained as one "
            "mixture (SPoT), or a name for your own --train-file/--dev-file task.",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Output folder: best/, embedding/, checkpoint/, log.jsonl, curve.png.",
        ),
    ] = Path("runs/prompt"),
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    method: MethodOpt = TRAIN.method,
    memory_check: MemoryCheckOpt = MODEL.memory_check,
    activation_checkpointing: ActivationCheckpointingOpt = TRAIN.activation_checkpointing,
    steps: StepsOpt = TRAIN.steps,
    batch_size: BatchSizeOpt = TRAIN.batch_size,
    prompt_length: PromptLengthOpt = TRAIN.prompt_length,
    init: InitOpt = TRAIN.init,
    init_text: InitTextOpt = TRAIN.init_text,
    init_from: InitFromOpt = TRAIN.init_from,
    optimizer: OptimizerOpt = TRAIN.optimizer,
    loss: LossOpt = TRAIN.loss,
    lr: LrOpt = TRAIN.lr,
    length_scaled_lr: LengthScaledLrOpt = TRAIN.length_scaled_lr,
    max_input_tokens: MaxInputTokensOpt = TRAIN.max_input_tokens,
    truncation: TruncationOpt = TRAIN.truncation,
    reparam: ReparamOpt = TRAIN.reparam,
    reparam_bottleneck: ReparamBottleneckOpt = TRAIN.reparam_bottleneck,
    weight_decay: WeightDecayOpt = TRAIN.weight_decay,
    warmup_steps: WarmupStepsOpt = TRAIN.warmup_steps,
    decay: DecayOpt = TRAIN.decay,
    time_budget: TimeBudgetOpt = TRAIN.time_budget,
    grad_accum: GradAccumOpt = TRAIN.grad_accum,
    seed: SeedOpt = TRAIN.seed,
    ema: EmaOpt = TRAIN.ema,
    eval_every: EvalEveryOpt = TRAIN.eval_every,
    max_eval: MaxEvalOpt = TRAIN.max_eval,
    max_train: MaxTrainOpt = TRAIN.max_train,
    min_train_words: MinTrainWordsOpt = TRAIN.min_train_words,
    patience: PatienceOpt = TRAIN.patience,
    checkpoint_every: CheckpointEveryOpt = TRAIN.checkpoint_every,
    mixture_cap: MixtureCapOpt = None,
    embed_step: EmbedStepOpt = TRAIN.embed_step,
    lora_rank: LoraRankOpt = TRAIN.lora_rank,
    lora_alpha: LoraAlphaOpt = TRAIN.lora_alpha,
    lora_targets: LoraTargetsOpt = TRAIN.lora_targets,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    train_file: TrainFileOpt = None,
    dev_file: DevFileOpt = None,
    text_field: TextFieldOpt = None,
    label_field: LabelFieldOpt = "label",
    labels: LabelsOpt = None,
    template: TemplateOpt = None,
    nproc: NprocOpt = 1,
    shard_model: ShardModelOpt = False,
):
    """Train a soft prompt on a frozen model (or, with --method, the model's weights or LoRA
    adapters, or nothing) and print its best dev score."""
    cfg = config_from(TrainConfig, locals())
    the_task = runtime.train_task(task, mixture_cap, train_file, dev_file, text_field, label_field, labels, template)
    train_examples, dev_examples = runtime.training_data(the_task)  # a bad file fails before the model loads
    code = runtime.relaunch(nproc)  # settings and data are checked above, before any worker starts
    if code is not None:
        raise typer.Exit(code)
    enabled = memory_check and not shard_model
    # One run, one load: model tuning and LoRA train the loaded weights themselves (no copy).
    runtime.check_memory(
        model, precision, cfg.method, cfg.optimizer, enabled, cfg.activation_checkpointing, in_place=True
    )
    lm = runtime.load_model(model, precision)
    if shard_model:
        dp.shard_model(lm)
    cfg = replace(cfg, init_from=runtime.init_source(cfg.init_from, lm))
    result = run_train(
        lm,
        the_task,
        cfg,
        out,
        train_examples=train_examples,
        dev_examples=dev_examples,
        resume=resume,
        overwrite=overwrite,
        in_place=True,
    )
    if dp.context().main:
        shown = runtime.percents({k: v for k, v in result.best.metrics.items() if isinstance(v, float)})
        planned = f", {result.budget_steps} steps set by --time-budget {time_budget}" if result.budget_steps else ""
        typer.echo(
            f"{cfg.method}: {result.trainable_params:,} trainable parameters, "
            f"{result.bytes_per_task:,} bytes per task; peak memory {memory.gib(result.peak_memory)}"
        )
        typer.echo(
            f"{the_task.name} dev {shown} (best at step {result.best_step}{planned}, "
            f"{result.train_examples_per_s:.1f} train examples/s) -> {out}/best"
        )


def eval_(
    prompt: Annotated[
        list[Path],
        typer.Option(
            "--prompt",
            "-p",
            help="Prompt folder (a training output folder, its best/, or a PEFT adapter folder); "
            "repeat to evaluate several and their ensemble.",
        ),
    ],
    task: TaskOpt = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "dev",
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    batch_size: int = 32,
    max_eval: Annotated[Optional[int], typer.Option(help="Evaluate on at most N examples (seeded sample).")] = None,
    length_normalize: Annotated[
        bool,
        typer.Option(
            help="Rank labels by mean rather than total token log-likelihood.",
        ),
    ] = False,
    output: Annotated[Optional[Path], typer.Option(help="Also write metrics and predictions as JSON here.")] = None,
    dev_file: DevFileOpt = None,
    text_field: TextFieldOpt = None,
    label_field: LabelFieldOpt = "label",
    labels: LabelsOpt = None,
    template: TemplateOpt = None,
):
    """Score a prompt with the task's metrics (default task: the one it was trained on).
    Several --prompt: each prompt, their average and their ensembles (mean probability, vote)."""
    runtime.at_least_one(batch_size=batch_size, max_eval=max_eval)
    runtime.writable_output(output)
    read = [runtime.read_prompt(p) for p in prompt]  # prompts, task and data are checked before the model loads
    tuned = [p for p, saved in zip(prompt, read) if saved.extra.get("method") in WEIGHT_METHODS]
    if len(prompt) > 1 and tuned:
        raise SoftPromptError(f"--prompt {tuned[0]}: a tuned model or adapter, not a prompt; evaluate it alone")
    for path, saved in zip(prompt[1:], read[1:]):
        if (saved.task or {}).get("verbalizer") != (read[0].task or {}).get("verbalizer"):
            raise SoftPromptError(
                f"--prompt {path}: trained with other label words than --prompt {prompt[0]}; "
                "an ensemble needs the same labels"
            )
    the_task = runtime.prompt_task(read[0], task, dev_file, text_field, label_field, labels, template)
    if task and not dev_file:  # another task's data: the prompt keeps its label words (tasks/crosstask.py)
        the_task = task_for_prompt(the_task, read[0].task, where=f"prompt {prompt[0]}")
    examples = dev_sample(the_task.load("dev" if dev_file else split), max_eval)
    first, lm = runtime.model_for(prompt[0], read[0], model, precision)
    members = [first] + [runtime.adopt(p, saved, lm) for p, saved in zip(prompt[1:], read[1:])]
    plm = PromptedLM(lm)
    if len(prompt) == 1:
        cut = input_cut(first.training)  # long inputs cut as in training
        result = evaluate(plm, first.weight, the_task, examples, batch_size, length_normalize, progress=True, **cut)
        typer.echo(f"{the_task.name} {split} ({result.examples} examples): {runtime.percents(result.metrics)}")
        report = {"task": the_task.name, "split": split, "metrics": result.metrics, "predictions": result.predictions}
    else:
        report = _eval_ensemble(plm, prompt, members, the_task, split, examples, batch_size, length_normalize)
    if output:
        write_report_json(output, report)


def _eval_ensemble(plm, prompts, members, the_task, split, examples, batch_size, length_normalize) -> dict:
    """`eval` with several prompts: each one, their average, and their ensembles."""
    weights = [m.weight for m in members]
    result = evaluate_ensemble(plm, weights, the_task, examples, batch_size, length_normalize, progress=True)
    typer.echo(f"{the_task.name} {split} ({len(examples)} examples), {len(prompts)} prompts:")
    for path, ev in zip(prompts, result.members):
        typer.echo(f"  {path}: {runtime.percents(ev.metrics)}")
    typer.echo(f"  average: {runtime.percents(result.average)}")
    names = {"mean": "mean probability", "vote": "majority vote"}
    for method, ev in result.ensembles.items():
        typer.echo(f"  ensemble ({names[method]}): {runtime.percents(ev.metrics)}")
    return {
        "task": the_task.name,
        "split": split,
        "members": [
            {"prompt": str(p), "metrics": ev.metrics, "predictions": ev.predictions}
            for p, ev in zip(prompts, result.members)
        ],
        "average": result.average,
        "ensembles": {m: {"metrics": ev.metrics, "predictions": ev.predictions} for m, ev in result.ensembles.items()},
    }


def predict(
    prompt: Annotated[
        Optional[Path],
        typer.Option(
            "--prompt",
            "-p",
            help="Prompt folder (a training output folder, its best/, or a PEFT adapter folder).",
        ),
    ] = None,
    input: Annotated[
        Optional[Path],
        typer.Option(
            "--input",
            "-i",
            help="Text file, one input per line (default: stdin).",
        ),
    ] = None,
    task: TaskOpt = None,
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    batch_size: int = 32,
    server: Annotated[
        Optional[str],
        typer.Option(
            help="Ask a running `softprompt serve` at this URL instead (with --task: a task, prompt or ensemble it "
            "serves).",
        ),
    ] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="SOFTPROMPT_API_KEY", help="API key for --server.")] = None,
):
    """Predict a label (or generate text) for each input line; one output per line."""
    if server or prompt is None:
        return _predict_remote(server, task, prompt, input, api_key)
    runtime.at_least_one(batch_size=batch_size)
    saved = runtime.read_prompt(prompt)  # prompt, task and input lines are checked before the model loads
    the_task = runtime.prompt_task(saved, task)
    if task:  # another task's template: the prompt keeps its label words, as in `eval --task`
        the_task = task_for_prompt(the_task, saved.task, where=f"prompt {prompt}")
    texts = runtime.read_inputs(input)
    saved, lm = runtime.model_for(prompt, saved, model, precision)
    field = the_task.template_fields[0]
    label = the_task.labels[0] if the_task.labels else ""
    examples = [Example({f: t if f == field else "" for f in the_task.template_fields}, label) for t in texts]
    preds, _ = run_predict(PromptedLM(lm), saved.weight, the_task, examples, batch_size, **input_cut(saved.training))
    for p in preds:
        typer.echo(p)


def _predict_remote(server, task, prompt, input, api_key):
    """`predict --server URL --task T`: the same output, answered by a running server."""
    if not server:
        raise SoftPromptError("--prompt: give a prompt folder, or --server URL with --task")
    if prompt is not None:
        raise SoftPromptError("--prompt: not used with --server (name what the server serves with --task)")
    if not task:
        raise SoftPromptError("--task: name the task, prompt or ensemble to ask --server for")
    from softprompt.serve.client import Client  # needs httpx, an optional extra (serve): imported only when used

    texts = runtime.read_inputs(input)
    with Client(server, api_key=api_key) as client:
        for p in client.predict(task, texts):
            typer.echo(p)


def inspect(
    prompt: PromptOpt,
    model: ModelOpt = MODEL.model,
    top_k: Annotated[int, typer.Option(help="Nearest tokens per prompt position.")] = 5,
):
    """Nearest vocabulary tokens (cosine similarity) of each prompt position."""
    runtime.at_least_one(top_k=top_k)
    saved, lm = runtime.prompt_and_model(prompt, model, Precision.FP32.value)
    for position, neighbours in enumerate(nearest_tokens(saved.weight, lm, top_k)):
        typer.echo(f"{position:3d}  " + "  ".join(f"{tok!r} {sim:.2f}" for tok, sim in neighbours))


def tasks():
    """List the built-in tasks."""
    for name in task_names():
        t = get_task(name)
        if t.verbalizer and len(t.verbalizer) <= 4:
            kind = "rank: " + "/".join(t.verbalizer.values())
        else:
            kind = "rank" if t.verbalizer else "generate"
        typer.echo(f"{name:18s} {','.join(t.metrics):24s} {kind:40s} {t.description}")


def info():
    """This machine as softprompt sees it: torch, device, CPU flags, threads, and what
    --precision auto picks here with the two measured matmul rates."""
    typer.echo(precision_report())
