"""The `softprompt` command line. Each command is a plain function whose flags are its
typed parameters; the library API (softprompt/__init__.py) mirrors them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from softprompt.errors import SoftPromptError

app = typer.Typer(
    help="Train, evaluate and use soft prompts on frozen language models (Lester et al. 2021).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Short name (smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b), HF model folder, .gguf file or hub name. Default: the embedded SmolLM2-135M-Instruct.")]
EmaOpt = Annotated[float, typer.Option(help="Evaluate and keep an exponential moving average of the prompt over steps, with this decay (0: the raw prompt, as in the paper). It damps the dev-score swings of a constant lr 0.3.")]
PrecisionOpt = Annotated[str, typer.Option(help="Frozen-weight precision: auto (bf16 where the CPU/GPU runs it natively), bf16 or fp32.")]
TaskOpt = Annotated[Optional[str], typer.Option("--task", "-t", help="Built-in task name (see `softprompt tasks`), or a name for your own --train-file/--dev-file task.")]
TrainFileOpt = Annotated[Optional[Path], typer.Option(help="Your own training data (.csv, .tsv or .jsonl).")]
DevFileOpt = Annotated[Optional[Path], typer.Option(help="Your own dev/eval data (.csv, .tsv or .jsonl).")]
TextFieldOpt = Annotated[Optional[list[str]], typer.Option("--text-field", help="Input field(s) of your data file; repeat for several.")]
LabelFieldOpt = Annotated[str, typer.Option(help="Label field of your data file.")]
LabelsOpt = Annotated[Optional[str], typer.Option("--labels", help="Label words of your task: '0=negative,1=positive' (omit for a generation task).")]
TemplateOpt = Annotated[Optional[str], typer.Option(help="Input template over your fields, e.g. 'review: {text}'.")]
PromptOpt = Annotated[Path, typer.Option("--prompt", "-p", help="Prompt folder (a training output folder, its best/, or a PEFT adapter folder).")]


def _task(task, train_file, dev_file, text_field, label_field, labels, template):
    from softprompt.tasks import get_task, parse_label_words, user_task

    if train_file or dev_file:
        files = {k: v for k, v in (("train", train_file), ("dev", dev_file)) if v}
        verbalizer = parse_label_words(labels) if labels else None
        return user_task(task or "custom", files, text_field or [], label_field, verbalizer, template)
    if not task:
        raise SoftPromptError("--task: name a built-in task (see `softprompt tasks`) or give --train-file/--dev-file")
    return get_task(task)


def _prompt_task(saved, task, dev_file=None, text_field=None, label_field="label", labels=None, template=None):
    """The task to use a saved prompt on: --task, else the one it was trained on. A task from
    the user's files defaults to the template and label words saved with the prompt."""
    from softprompt.tasks import get_task, parse_label_words, saved_task, user_task

    meta = saved.task or {}
    if dev_file:
        if not text_field:
            text_field = [f for f in _template_fields(template or meta.get("template", ""))]
        verbalizer = parse_label_words(labels) if labels else meta.get("verbalizer")
        name = task or meta.get("name") or "custom"
        return user_task(name, {"dev": dev_file}, text_field, label_field, verbalizer, template or meta.get("template"))
    return get_task(task) if task else saved_task(meta)


def _template_fields(template: str) -> list[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _train_task(task, mixture_cap, train_file, dev_file, text_field, label_field, labels, template):
    """--task for training: one task, or a comma list of built-in tasks trained as one mixture."""
    from softprompt.tasks.mixture import parse_tasks

    if task and "," in task:
        if train_file or dev_file:
            raise SoftPromptError("--task: a mixture (a,b,...) takes built-in tasks only, not --train-file/--dev-file")
        return parse_tasks(task, mixture_cap)
    if mixture_cap is not None:
        raise SoftPromptError("--mixture-cap: applies to a mixture of tasks (--task a,b,...)")
    return _task(task, train_file, dev_file, text_field, label_field, labels, template)


def _load(model, precision):
    from softprompt.models.loading import load_model

    return load_model(model, precision)


@app.command()
def train(
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Built-in task name (see `softprompt tasks`), a comma list of them trained as one mixture (SPoT), or a name for your own --train-file/--dev-file task.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: best/, embedding/, checkpoint/, log.jsonl, curve.png.")] = Path("runs/prompt"),
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 500,
    batch_size: Annotated[int, typer.Option(help="Examples per step (before accumulation).")] = 16,
    prompt_length: Annotated[int, typer.Option(help="Prompt tokens P (paper: 1, 5, 20, 100, 150).")] = 20,
    init: Annotated[str, typer.Option(help="auto | vocab (5,000 commonest tokens) | uniform | labels | text | file.")] = "auto",
    init_text: Annotated[Optional[str], typer.Option(help="Text to initialise from (--init text).")] = None,
    init_from: Annotated[Optional[str], typer.Option(help="Saved prompt to start from (transfer).")] = None,
    optimizer: Annotated[str, typer.Option(help="adafactor (paper) or adamw.")] = "adafactor",
    loss: Annotated[str, typer.Option(help="rank: cross-entropy over the task's labels, each scored as evaluation ranks it (generation rows: lm) | lm: cross-entropy of the target over the whole vocabulary (the paper's text-to-text loss) | rank+lm: their sum.")] = "rank+lm",
    lr: Annotated[float, typer.Option(help="Learning rate (paper: 0.3, constant).")] = 0.3,
    weight_decay: Annotated[float, typer.Option(help="Weight decay (paper: 1e-5).")] = 1e-5,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 0,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation micro-batches per step.")] = 1,
    seed: int = 0,
    ema: EmaOpt = 0.99,
    eval_every: Annotated[int, typer.Option(help="Evaluate on dev every N steps.")] = 100,
    max_eval: Annotated[Optional[int], typer.Option(help="Evaluate on at most N dev examples (seeded sample).")] = None,
    max_train: Annotated[Optional[int], typer.Option(help="Train on at most N examples (seeded sample).")] = None,
    patience: Annotated[Optional[int], typer.Option(help="Early stop after N evaluations without improvement.")] = None,
    mixture_cap: Annotated[Optional[int], typer.Option(help="Mixture: a task counts for at most K examples in the examples-proportional mixing rates.")] = None,
    embed_step: Annotated[Optional[int], typer.Option(help="Save the prompt at this step as OUT/embedding/, the task embedding for `softprompt similar` (default 10; 0: none).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty output folder.")] = False,
    train_file: TrainFileOpt = None,
    dev_file: DevFileOpt = None,
    text_field: TextFieldOpt = None,
    label_field: LabelFieldOpt = "label",
    labels: LabelsOpt = None,
    template: TemplateOpt = None,
):
    """Train a soft prompt on a frozen model and print its best dev score."""
    from softprompt.spot.transfer import DEFAULT_EMBED_STEP
    from softprompt.train import TrainConfig
    from softprompt.train import train as run_train

    if embed_step is None:
        embed_step = min(DEFAULT_EMBED_STEP, steps)
    cfg = TrainConfig(
        steps=steps, batch_size=batch_size, prompt_length=prompt_length, init=init, init_text=init_text,
        init_from=init_from, optimizer=optimizer, loss=loss, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
        grad_accum=grad_accum, seed=seed, eval_every=eval_every, max_eval=max_eval, max_train=max_train,
        patience=patience, embed_step=embed_step or None, ema=ema,
    )
    the_task = _train_task(task, mixture_cap, train_file, dev_file, text_field, label_field, labels, template)
    lm = _load(model, precision)
    result = run_train(lm, the_task, cfg, out, resume=resume, overwrite=overwrite)
    metrics = {k: v for k, v in result.best.metrics.items() if isinstance(v, float)}
    shown = ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items())
    typer.echo(f"{the_task.name} dev {shown} (best at step {result.best_step}, {result.train_examples_per_s:.1f} train examples/s) -> {out}/best")


@app.command("eval")
def eval_(
    prompt: Annotated[list[Path], typer.Option("--prompt", "-p", help="Prompt folder (a training output folder, its best/, or a PEFT adapter folder); repeat to evaluate several and their ensemble.")],
    task: TaskOpt = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "dev",
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    batch_size: int = 32,
    max_eval: Annotated[Optional[int], typer.Option(help="Evaluate on at most N examples (seeded sample).")] = None,
    length_normalize: Annotated[bool, typer.Option(help="Rank labels by mean rather than total token log-likelihood.")] = False,
    output: Annotated[Optional[Path], typer.Option(help="Also write metrics and predictions as JSON here.")] = None,
    dev_file: DevFileOpt = None,
    text_field: TextFieldOpt = None,
    label_field: LabelFieldOpt = "label",
    labels: LabelsOpt = None,
    template: TemplateOpt = None,
):
    """Score a prompt with the task's metrics (default task: the one it was trained on).
    Several --prompt: each prompt, their average and their ensembles (mean probability, vote)."""
    import random

    from softprompt.tasks.crosstask import task_for_prompt
    from softprompt.evaluate import evaluate
    from softprompt.scoring import PromptedLM

    if len(prompt) > 1:
        return _eval_ensemble(prompt, task, split, model, precision, batch_size, max_eval, length_normalize, output, dev_file, text_field, label_field, labels, template)
    prompt = prompt[0]
    saved, lm = _prompt_and_model(prompt, model, precision)
    the_task = _prompt_task(saved, task, dev_file, text_field, label_field, labels, template)
    if task and not dev_file:  # another task's data: the prompt keeps its label words (bench/crosstask.py)
        the_task = task_for_prompt(the_task, saved.task, where=f"prompt {prompt}")
    examples = the_task.load("dev" if dev_file else split)
    if max_eval and max_eval < len(examples):
        examples = random.Random(1234).sample(examples, max_eval)
    result = evaluate(PromptedLM(lm), saved.weight, the_task, examples, batch_size, length_normalize, progress=True)
    shown = ", ".join(f"{k} {100 * v:.2f}%" for k, v in result.metrics.items())
    typer.echo(f"{the_task.name} {split} ({result.examples} examples): {shown}")
    if output:
        output.write_text(json.dumps({"task": the_task.name, "split": split, "metrics": result.metrics, "predictions": result.predictions}, indent=2))


@app.command()
def predict(
    prompt: Annotated[Optional[Path], typer.Option("--prompt", "-p", help="Prompt folder (a training output folder, its best/, or a PEFT adapter folder).")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="Text file, one input per line (default: stdin).")] = None,
    task: TaskOpt = None,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    batch_size: int = 32,
    server: Annotated[Optional[str], typer.Option(help="Ask a running `softprompt serve` at this URL instead (with --task: a task, prompt or ensemble it serves).")] = None,
    api_key: Annotated[Optional[str], typer.Option(envvar="SOFTPROMPT_API_KEY", help="API key for --server.")] = None,
):
    """Predict a label (or generate text) for each input line; one output per line."""
    from softprompt.evaluate import predict as run_predict
    from softprompt.scoring import PromptedLM
    from softprompt.tasks.base import Example

    if server or prompt is None:
        return _predict_remote(server, task, prompt, input, api_key)
    saved, lm = _prompt_and_model(prompt, model, precision)
    the_task = _prompt_task(saved, task)
    if input is not None and not input.is_file():
        raise SoftPromptError(f"{input}: file not found")
    lines = (input.read_text() if input else sys.stdin.read()).splitlines()
    texts = [l for l in lines if l.strip()]
    if not texts:
        raise SoftPromptError(f"{input or 'stdin'}: no input lines")
    field = the_task.template_fields[0]
    examples = [Example({f: t if f == field else "" for f in the_task.template_fields}, the_task.labels[0] if the_task.labels else "") for t in texts]
    preds, _ = run_predict(PromptedLM(lm), saved.weight, the_task, examples, batch_size)
    for p in preds:
        typer.echo(p)


@app.command()
def inspect(
    prompt: PromptOpt,
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option(help="Nearest tokens per prompt position.")] = 5,
):
    """Nearest vocabulary tokens (cosine similarity) of each prompt position."""
    from softprompt.inspect import nearest_tokens

    saved, lm = _prompt_and_model(prompt, model, "fp32")
    for position, neighbours in enumerate(nearest_tokens(saved.weight, lm, top_k)):
        typer.echo(f"{position:3d}  " + "  ".join(f"{tok!r} {sim:.2f}" for tok, sim in neighbours))


@app.command("export-peft")
def export_peft(
    prompt: PromptOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder to write.")],
):
    """Write a prompt as a PEFT prompt-tuning adapter (adapter_config.json + adapter_model.safetensors)."""
    from softprompt.io import export_peft as run_export
    from softprompt.io import load_prompt
    from softprompt.io import resolve_prompt_dir

    saved = load_prompt(resolve_prompt_dir(prompt))
    task_type = "SEQ_2_SEQ_LM" if "ConditionalGeneration" in saved.model.architecture else "CAUSAL_LM"
    run_export(saved, out, task_type)
    typer.echo(f"wrote PEFT adapter to {out}")


@app.command("import-peft")
def import_peft(
    adapter: Annotated[Path, typer.Argument(help="PEFT prompt-tuning adapter folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prompt folder to write.")],
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    task: TaskOpt = None,
):
    """Convert a PEFT prompt-tuning adapter into a softprompt prompt folder for MODEL."""
    from softprompt.io import import_peft as run_import
    from softprompt.io import save_prompt
    from softprompt.tasks import get_task

    lm = _load(model, precision)
    saved = run_import(adapter, lm.identity)
    lm.identity.check_compatible(saved.model, f"adapter {adapter}")
    if task:
        saved.task = get_task(task).meta()
    save_prompt(out, saved)
    typer.echo(f"wrote prompt to {out}")


@app.command()
def tasks():
    """List the built-in tasks."""
    from softprompt.tasks import get_task, task_names

    for name in task_names():
        t = get_task(name)
        kind = "rank: " + "/".join(t.verbalizer.values()) if t.verbalizer and len(t.verbalizer) <= 4 else ("rank" if t.verbalizer else "generate")
        typer.echo(f"{name:18s} {','.join(t.metrics):24s} {kind:40s} {t.description}")


def _eval_ensemble(prompts, task, split, model, precision, batch_size, max_eval, length_normalize, output, dev_file, text_field, label_field, labels, template):
    """`eval` with several prompts: each one, their average, and their ensembles."""
    import random

    from softprompt.tasks.crosstask import task_for_prompt
    from softprompt.ensemble import evaluate_ensemble
    from softprompt.scoring import PromptedLM

    first, lm = _prompt_and_model(prompts[0], model, precision)
    members = [first] + [_prompt_for(p, lm) for p in prompts[1:]]
    for path, saved in zip(prompts[1:], members[1:]):
        if (saved.task or {}).get("verbalizer") != (first.task or {}).get("verbalizer"):
            raise SoftPromptError(f"--prompt {path}: trained with other label words than --prompt {prompts[0]}; an ensemble needs the same labels")
    the_task = _prompt_task(first, task, dev_file, text_field, label_field, labels, template)
    if task and not dev_file:
        the_task = task_for_prompt(the_task, first.task, where=f"prompt {prompts[0]}")
    examples = the_task.load("dev" if dev_file else split)
    if max_eval and max_eval < len(examples):
        examples = random.Random(1234).sample(examples, max_eval)
    result = evaluate_ensemble(PromptedLM(lm), [m.weight for m in members], the_task, examples, batch_size, length_normalize, progress=True)

    def shown(metrics):
        return ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items())

    typer.echo(f"{the_task.name} {split} ({len(examples)} examples), {len(prompts)} prompts:")
    for path, ev in zip(prompts, result.members):
        typer.echo(f"  {path}: {shown(ev.metrics)}")
    typer.echo(f"  average: {shown(result.average)}")
    names = {"mean": "mean probability", "vote": "majority vote"}
    for method, ev in result.ensembles.items():
        typer.echo(f"  ensemble ({names[method]}): {shown(ev.metrics)}")
    if output:
        output.write_text(json.dumps({
            "task": the_task.name, "split": split,
            "members": [{"prompt": str(p), "metrics": ev.metrics, "predictions": ev.predictions} for p, ev in zip(prompts, result.members)],
            "average": result.average,
            "ensembles": {m: {"metrics": ev.metrics, "predictions": ev.predictions} for m, ev in result.ensembles.items()},
        }, indent=2))


def _prompt_for(prompt: Path, lm):
    """A further prompt for the loaded model `lm` (refused if made for another model)."""
    from softprompt.io import import_peft as run_import
    from softprompt.io import load_prompt, resolve_prompt_dir

    path = resolve_prompt_dir(prompt)
    saved = load_prompt(path)
    if saved.model.fingerprint == "unknown":
        saved = run_import(path, lm.identity)
    lm.identity.check_compatible(saved.model, str(prompt))
    return saved


def _predict_remote(server, task, prompt, input, api_key):
    """`predict --server URL --task T`: the same output, answered by a running server."""
    if not server:
        raise SoftPromptError("--prompt: give a prompt folder, or --server URL with --task")
    if prompt is not None:
        raise SoftPromptError("--prompt: not used with --server (name what the server serves with --task)")
    if not task:
        raise SoftPromptError("--task: name the task, prompt or ensemble to ask --server for")
    from softprompt.serve.client import Client

    if input is not None and not input.is_file():
        raise SoftPromptError(f"{input}: file not found")
    texts = [l for l in (input.read_text() if input else sys.stdin.read()).splitlines() if l.strip()]
    if not texts:
        raise SoftPromptError(f"{input or 'stdin'}: no input lines")
    with Client(server, api_key=api_key) as client:
        for p in client.predict(task, texts):
            typer.echo(p)


def _prompt_and_model(prompt: Path, model, precision):
    from softprompt.io import import_peft as run_import
    from softprompt.io import load_prompt, resolve_prompt_dir

    path = resolve_prompt_dir(prompt)
    saved = load_prompt(path)
    lm = _load(model or (saved.model.name if saved.model.fingerprint != "unknown" else None), precision)
    if saved.model.fingerprint == "unknown":
        saved = run_import(path, lm.identity)
    lm.identity.check_compatible(saved.model, str(prompt))
    return saved, lm


import softprompt.bench.cli  # noqa: E402,F401  (registers `bench`)
import softprompt.spot.cli  # noqa: E402,F401
import softprompt.serve.cli  # noqa: E402,F401

# typer >= 0.20 raises its own (vendored click) exceptions, older typer raises click's.
USAGE_ERRORS = (click.exceptions.ClickException, getattr(typer.exceptions, "TyperException", click.exceptions.ClickException))
EXITS = (click.exceptions.Exit, typer.Exit)
ABORTS = (click.exceptions.Abort, typer.Abort)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors are one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except SoftPromptError as err:
        typer.echo(f"error: {err}", err=True)
        return 2
    except EXITS as done:
        return done.exit_code
    except ABORTS:
        typer.echo("aborted", err=True)
        return 130
    except USAGE_ERRORS as err:
        ctx = getattr(err, "ctx", None)
        where = f" ({ctx.command_path})" if ctx else ""
        message = " ".join(err.format_message().split())
        typer.echo(f"error: {message}{where}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
