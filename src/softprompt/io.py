"""Save and load prompts and training checkpoints; PEFT adapter import/export.

A saved prompt is a folder:
  prompt.safetensors   {"prompt": (P, H) float32}
  prompt.json          everything needed to use it again (model identity, task,
                       template, verbalizer, init, training settings, dev metrics)
A checkpoint folder (`save_checkpoint`) holds prompt/ (the raw prompt),
optimizer.safetensors (optimizer tensors and the prompt average) and trainer.json
(counters, optimizer scalars, param groups, schedule) so training can resume.
A training output folder stands for its best prompt (`resolve_prompt_dir`).
Only safetensors and JSON are ever read. Every folder is written to a temporary sibling
and renamed into place, so a crash never leaves a half-written or overwritten prompt.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from softprompt.errors import ConfigError, ModelError
from softprompt.models.identity import ModelIdentity

PROMPT_FILE = "prompt.safetensors"
META_FILE = "prompt.json"
FORMAT_VERSION = 1


@dataclass
class SavedPrompt:
    """A prompt and its metadata as stored on disk."""

    weight: torch.Tensor  # (P, H) float32
    model: ModelIdentity
    task: dict
    init: str = "vocab"
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.weight.shape[0]

    def meta(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "model": self.model.to_dict(),
            "hidden_size": self.weight.shape[1],
            "prompt_length": self.weight.shape[0],
            "task": self.task,
            "init": self.init,
            "training": self.training,
            "metrics": self.metrics,
            **self.extra,
        }


def atomic_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Write a folder via `write(tmp)` then move it to `target` in one rename.

    An existing `target` is replaced only after the new folder is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def resolve_prompt_dir(path: Path) -> Path:
    """A training output folder stands for its best prompt (OUT/best); any other folder for itself."""
    path = Path(path)
    return path / "best" if (path / "best").is_dir() else path


def save_prompt(path: Path, prompt: SavedPrompt) -> Path:
    """Save `prompt` as a folder at `path` (atomically)."""

    def write(tmp: Path) -> None:
        save_file({"prompt": prompt.weight.detach().float().cpu().contiguous()}, tmp / PROMPT_FILE)
        write_json(tmp / META_FILE, prompt.meta())

    return atomic_dir(Path(path), write)


def load_prompt(path: Path) -> SavedPrompt:
    """Load a prompt folder written by `save_prompt` (or a PEFT adapter folder)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: prompt folder not found")
    if (path / "adapter_config.json").exists() and not (path / META_FILE).exists():
        return import_peft(path)
    meta = read_json(path / META_FILE)
    weight = _load_tensor(path / PROMPT_FILE, "prompt")
    known = {"format_version", "model", "hidden_size", "prompt_length", "task", "init", "training", "metrics"}
    try:
        model = ModelIdentity.from_dict(meta["model"])
    except (KeyError, TypeError):
        raise ConfigError(f"{path / META_FILE}: missing or malformed 'model' entry") from None
    return SavedPrompt(
        weight=weight,
        model=model,
        task=meta.get("task", {}),
        init=meta.get("init", "unknown"),
        training=meta.get("training", {}),
        metrics=meta.get("metrics", {}),
        extra={k: v for k, v in meta.items() if k not in known},
    )


def _load_tensor(path: Path, key: str) -> torch.Tensor:
    try:
        tensors = load_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from None
    if key not in tensors:
        raise ConfigError(f"{path}: no tensor named {key!r} (found {', '.join(tensors) or 'none'})")
    weight = tensors[key].float()
    if weight.ndim != 2:
        raise ConfigError(f"{path}: {key!r} must be (length, hidden), found shape {tuple(weight.shape)}")
    return weight


# -- training checkpoints ----------------------------------------------------------------


@dataclass
class Checkpoint:
    """The state a training run resumes from.

    Attributes:
        prompt: The raw (not averaged) prompt and its metadata.
        optimizer: `torch.optim.Optimizer.state_dict()` (tensors on the CPU after loading).
        schedule: The lr scheduler's `state_dict()`.
        counters: step, best_score, best_step, evals_since_best.
        average: The prompt average (P, H), or None when training keeps none.
    """

    prompt: SavedPrompt
    optimizer: dict
    schedule: dict
    counters: dict
    average: torch.Tensor | None = None


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` as a folder at `path` (atomically): tensors as safetensors, the rest JSON."""
    tensors, scalars = {}, {}
    if checkpoint.average is not None:
        tensors["average"] = checkpoint.average.detach().cpu().contiguous()
    for pid, slots in checkpoint.optimizer["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value

    def write(tmp: Path) -> None:
        save_prompt(tmp / "prompt", checkpoint.prompt)
        save_file(tensors or {"_empty": torch.zeros(0)}, tmp / "optimizer.safetensors")
        write_json(tmp / "trainer.json", {
            **checkpoint.counters, "optimizer_scalars": scalars,
            "param_groups": checkpoint.optimizer["param_groups"], "schedule": checkpoint.schedule,
        })

    return atomic_dir(Path(path), write)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a folder written by `save_checkpoint`."""
    path = Path(path)
    meta = read_json(path / "trainer.json")
    tensors = load_file(path / "optimizer.safetensors")
    average = tensors.pop("average", None)
    state: dict = {}
    for key, value in tensors.items():
        if key != "_empty":
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    counters = {k: meta[k] for k in ("step", "best_score", "best_step", "evals_since_best")}
    return Checkpoint(load_prompt(path / "prompt"), {"state": state, "param_groups": meta["param_groups"]},
                      meta["schedule"], counters, average)


# -- PEFT interop ---------------------------------------------------------------------


def export_peft(prompt: SavedPrompt, path: Path, task_type: str = "CAUSAL_LM") -> Path:
    """Write `prompt` as a PEFT prompt-tuning adapter (adapter_config.json +
    adapter_model.safetensors) that `PeftModel.from_pretrained` loads."""
    length, hidden = prompt.weight.shape
    config = {
        "peft_type": "PROMPT_TUNING",
        "task_type": task_type,
        "num_virtual_tokens": length,
        "token_dim": hidden,
        # Encoder-only prompts, as in Lester et al.; PEFT reads 1 as "encoder input only".
        "num_transformer_submodules": 1,
        "prompt_tuning_init": "RANDOM",
        "prompt_tuning_init_text": None,
        "tokenizer_name_or_path": None,
        "tokenizer_kwargs": None,
        "base_model_name_or_path": prompt.model.name,
        "inference_mode": True,
        "revision": None,
        "modules_to_save": None,
        "auto_mapping": None,
    }

    def write(tmp: Path) -> None:
        save_file({"prompt_embeddings": prompt.weight.float().contiguous()}, tmp / "adapter_model.safetensors")
        write_json(tmp / "adapter_config.json", config)
        write_json(tmp / META_FILE, prompt.meta())  # keeps the identity for re-import

    return atomic_dir(Path(path), write)


def import_peft(path: Path, identity: ModelIdentity | None = None) -> SavedPrompt:
    """Read a PEFT prompt-tuning adapter folder as a prompt.

    PEFT adapters carry no embedding fingerprint; the loaded model's identity is
    adopted (when given) after checking the width.
    """
    path = Path(path)
    config = read_json(path / "adapter_config.json")
    if config.get("peft_type") != "PROMPT_TUNING":
        raise ConfigError(f"{path / 'adapter_config.json'}: peft_type is {config.get('peft_type')!r}, expected 'PROMPT_TUNING'")
    weight = _load_tensor(path / "adapter_model.safetensors", "prompt_embeddings")
    weight = weight[: int(config.get("num_virtual_tokens", weight.shape[0]))]  # encoder prompt
    if (path / META_FILE).exists():
        meta = read_json(path / META_FILE)
        model = ModelIdentity.from_dict(meta["model"])
        task = meta.get("task", {})
    else:
        name = config.get("base_model_name_or_path") or "unknown"
        model = ModelIdentity(name, "unknown", weight.shape[1], "unknown")
        task = {}
    if identity is not None and model.fingerprint == "unknown":
        if identity.hidden_size != weight.shape[1]:
            raise ModelError(f"{path}: PEFT prompt width {weight.shape[1]} != model hidden size {identity.hidden_size}")
        model = identity
    return SavedPrompt(weight=weight, model=model, task=task, init="peft", extra={"imported_from": str(path)})
