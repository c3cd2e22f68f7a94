"""`export-peft` and `import-peft`: prompts to and from Hugging Face PEFT prompt-tuning adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from softprompt.cli import runtime
from softprompt.cli.options import MODEL, ModelOpt, PrecisionOpt, PromptOpt, TaskOpt
from softprompt.io import export_peft as run_export
from softprompt.io import import_peft as run_import
from softprompt.io import load_prompt, resolve_prompt_dir, save_prompt
from softprompt.tasks import get_task


def export_peft(
    prompt: PromptOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Adapter folder to write.")],
):
    """Write a prompt as a PEFT prompt-tuning adapter (adapter_config.json + adapter_model.safetensors)."""
    saved = load_prompt(resolve_prompt_dir(prompt))
    task_type = "SEQ_2_SEQ_LM" if "ConditionalGeneration" in saved.model.architecture else "CAUSAL_LM"
    run_export(saved, out, task_type)
    typer.echo(f"wrote PEFT adapter to {out}")


def import_peft(
    adapter: Annotated[Path, typer.Argument(help="PEFT prompt-tuning adapter folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Prompt folder to write.")],
    model: ModelOpt = MODEL.model,
    precision: PrecisionOpt = MODEL.precision,
    task: TaskOpt = None,
):
    """Convert a PEFT prompt-tuning adapter into a softprompt prompt folder for MODEL."""
    lm = runtime.load_model(model, precision)
    saved = run_import(adapter, lm.identity)
    lm.identity.check_compatible(saved.model, f"adapter {adapter}")
    if task:
        saved.task = get_task(task).meta()
    save_prompt(out, saved)
    typer.echo(f"wrote prompt to {out}")
