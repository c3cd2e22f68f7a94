"""What the commands share when they run: loading the model, resolving prompts and tasks,
reading input lines.

`load_model(model, precision)` is the one place the command line loads a model, and the
seam tests replace (`monkeypatch.setattr("softprompt.cli.runtime.load_model", ...)`):
commands call it as `runtime.load_model(...)`, through this module, so the patch applies.
"""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path

import torch

from softprompt import distributed as dp
from softprompt import tuning
from softprompt.config import Method, Precision
from softprompt.errors import ConfigError, SoftPromptError
from softprompt.io import SavedPrompt, import_peft, load_prompt, resolve_prompt_dir
from softprompt.models import loading, memory
from softprompt.models.loading import LoadedModel
from softprompt.spot import library as lib
from softprompt.tasks import Task, get_task, parse_label_words, saved_task, user_task
from softprompt.tasks.base import Example
from softprompt.tasks.mixture import Mixture, parse_tasks

# The command line as the user typed it (set by `main`): `--nproc` relaunches it under torchrun.
ARGV: list[str] = []


def load_model(model: str | None, precision: str) -> LoadedModel:
    """The frozen model for --model/--precision (the seam tests patch; see the module docstring).
    Under torchrun it first joins the job (a no-op in one process) and loads on this worker's
    device (cuda:LOCAL_RANK with NCCL)."""
    ctx = dp.init_from_env()
    return loading.load_model(model, precision, device=str(dp.device_for(ctx)))


BUILTIN_PREFIX = "builtin:"  # --init-from builtin:NAME, an entry of the built-in library


def init_source(init_from: str | None, lm: LoadedModel) -> str | None:
    """--init-from as a prompt folder: `builtin:NAME` is the built-in library's entry NAME for
    the loaded model (`softprompt library list --builtin`), anything else a path as given."""
    if not init_from or not init_from.startswith(BUILTIN_PREFIX):
        return init_from
    name = init_from[len(BUILTIN_PREFIX) :]
    shipped = {e.name: e for e in lib.entries(lib.builtin_for(lm.identity))}
    if name not in shipped:
        raise ConfigError(
            f"--init-from {init_from}: the built-in library of {lm.identity.name} has no entry {name!r} "
            f"(entries: {', '.join(shipped)})"
        )
    return str(shipped[name].prompt_dir)


def check_memory(
    model: str | None,
    precision: str,
    method: str,
    optimizer: str,
    enabled: bool = True,
    checkpointing: bool = False,
    in_place: bool = False,
) -> int | None:
    """Refuse, before loading it, a model that `method` cannot train in this machine's memory
    (one line with the estimate and what is available; see models/memory.py; `in_place`: the
    run trains the loaded weights, no copy). Returns the estimate in bytes, or None when
    unchecked (disabled, or a hub model not on this machine)."""
    if not enabled:
        return None
    params = loading.parameter_count(model)
    if params is None:
        return None
    ctx = dp.context()
    device = dp.device_for(ctx) if ctx.active else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype_bytes = loading.resolve_dtype(precision, torch.device(device)).itemsize
    what = f"--model {model or loading.DEFAULT_MODEL}"
    return memory.check_fits(params, dtype_bytes, method, optimizer, device, what, checkpointing, in_place=in_place)


def relaunch(nproc: int) -> int | None:
    """`--nproc N` (N > 1) outside a torchrun job: run this same command on N local workers
    through torchrun and return the job's exit code; None when this process should do the work."""
    if nproc < 1:
        raise SoftPromptError(f"--nproc {nproc}: expected 1 or more workers")
    if nproc == 1 or dp.context().active or "WORLD_SIZE" in os.environ:
        return None
    argv, skip = [], False
    for arg in ARGV:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            argv.append(arg)
    return dp.launch(nproc, argv)


def resolve_task(task, train_file, dev_file, text_field, label_field, labels, template) -> Task:
    """--task, or a task over the user's --train-file/--dev-file."""
    if train_file or dev_file:
        files = {k: v for k, v in (("train", train_file), ("dev", dev_file)) if v}
        verbalizer = parse_label_words(labels) if labels else None
        return user_task(task or "custom", files, text_field or [], label_field, verbalizer, template)
    if not task:
        raise SoftPromptError("--task: name a built-in task (see `softprompt tasks`) or give --train-file/--dev-file")
    return get_task(task)


def train_task(task, mixture_cap, train_file, dev_file, text_field, label_field, labels, template) -> Task | Mixture:
    """--task for training: one task, or a comma list of built-in tasks trained as one mixture."""
    if task and "," in task:
        if train_file or dev_file:
            raise SoftPromptError("--task: a mixture (a,b,...) takes built-in tasks only, not --train-file/--dev-file")
        return parse_tasks(task, mixture_cap)
    if mixture_cap is not None:
        raise SoftPromptError("--mixture-cap: applies to a mixture of tasks (--task a,b,...)")
    return resolve_task(task, train_file, dev_file, text_field, label_field, labels, template)


def prompt_task(
    saved: SavedPrompt, task, dev_file=None, text_field=None, label_field="label", labels=None, template=None
) -> Task:
    """The task to use a saved prompt on: --task, else the one it was trained on. A task from
    the user's files defaults to the template and label words saved with the prompt."""
    meta = saved.task or {}
    if dev_file:
        if not text_field:
            text_field = template_fields(template or meta.get("template", ""))
        verbalizer = parse_label_words(labels) if labels else meta.get("verbalizer")
        name = task or meta.get("name") or "custom"
        return user_task(name, {"dev": dev_file}, text_field, label_field, verbalizer, template or meta.get("template"))
    return get_task(task) if task else saved_task(meta)


def template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def read_prompt(prompt: Path) -> SavedPrompt:
    """The prompt folder --prompt names (a training output folder stands for its best/), read
    without loading any model, so bad input is refused before the slow part."""
    return load_prompt(resolve_prompt_dir(prompt), weights_ok=True)


def adopt(prompt: Path, saved: SavedPrompt, lm: LoadedModel) -> SavedPrompt:
    """`saved` checked against the loaded model: refused if made for another model; a PEFT
    adapter (no fingerprint) adopts the model after a width check."""
    if saved.model.fingerprint == "unknown":
        saved = import_peft(resolve_prompt_dir(prompt), lm.identity)
    lm.identity.check_compatible(saved.model, str(prompt))
    return saved


def model_for(prompt: Path, saved: SavedPrompt, model: str | None, precision: str) -> tuple[SavedPrompt, LoadedModel]:
    """The model to use `saved` with (--model, else the one it was trained on), and the prompt checked against it.
    A model-tuning result brings its own model (best/model/, fp32 as trained unless --precision says
    otherwise); a LoRA result's adapter is attached to the model it was trained on."""
    method = saved.extra.get("method")
    if method == Method.MODEL.value and not model:
        model = str(tuning.model_folder(resolve_prompt_dir(prompt)))
        precision = Precision.FP32.value if precision == Precision.AUTO.value else precision
    lm = load_model(model or (saved.model.name if saved.model.fingerprint != "unknown" else None), precision)
    if method == Method.LORA.value:
        lm = tuning.attach(lm, resolve_prompt_dir(prompt))
    return adopt(prompt, saved, lm), lm


def prompt_and_model(prompt: Path, model: str | None, precision: str) -> tuple[SavedPrompt, LoadedModel]:
    """A prompt folder and the model to use it with: --model, else the one it was trained on."""
    return model_for(prompt, read_prompt(prompt), model, precision)


def prompt_for(prompt: Path, lm: LoadedModel) -> SavedPrompt:
    """A further prompt for the loaded model `lm` (refused if made for another model)."""
    return adopt(prompt, read_prompt(prompt), lm)


def training_data(task: Task | Mixture) -> tuple[list[Example] | None, list[Example] | None]:
    """A task's train and dev examples, read before the model loads so that a bad data file
    costs no model load (a mixture's tasks are read by `train` itself)."""
    if isinstance(task, Mixture):
        return None, None
    return task.load("train"), task.load("dev")


def read_inputs(input: Path | None) -> list[str]:
    """The non-blank lines of --input, else of stdin (UTF-8; a byte-order mark is allowed)."""
    where = str(input) if input is not None else "stdin"
    if input is not None and not input.is_file():
        raise SoftPromptError(f"{input}: file not found")
    try:
        text = input.read_bytes().decode("utf-8-sig") if input is not None else sys.stdin.read()
    except UnicodeDecodeError as err:
        raise SoftPromptError(f"{where}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    texts = [line for line in text.lstrip("\ufeff").splitlines() if line.strip()]
    if not texts:
        raise SoftPromptError(f"{where}: no input lines")
    return texts


def at_least_one(**flags: int | None) -> None:
    """Refuse a count flag below 1 (None means unset): one line naming it."""
    for name, value in flags.items():
        if value is not None and value < 1:
            raise SoftPromptError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def writable_output(output: Path | None) -> None:
    """Refuse --output into a folder that does not exist, before any work is done."""
    if output is not None and not output.parent.is_dir():
        raise SoftPromptError(f"--output {output}: folder {output.parent} does not exist")


def percents(metrics: dict) -> str:
    """'accuracy 91.20%, macro_f1 90.80%'."""
    return ", ".join(f"{k} {100 * v:.2f}%" for k, v in metrics.items())
