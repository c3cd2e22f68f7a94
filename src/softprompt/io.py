"""Save and load prompts and training checkpoints; PEFT adapter import/export.

A saved prompt is a folder:
  prompt.safetensors   {"prompt": (P, H) float32; float16 in the built-in library, read as float32}
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
import math
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
# prompt.json "method" values whose folder holds trained weights beside an empty prompt.
WEIGHT_METHODS = ("model", "lora")


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
    """Write a folder via `write(tmp)` then swap it in for `target`.

    The new folder is complete and fsynced before anything is renamed, and an existing
    `target` is moved aside (to a name unique to this swap) only then. A crash between the
    two renames leaves the previous folder at `.NAME.old-*`; the next `atomic_dir` or
    `recover_dir` on `target` puts it back (or removes it once `target` exists again).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        write(tmp)
        _fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old)  # onto an empty folder: allowed by rename(2)
            os.replace(tmp, target)
            _fsync_dir(target.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
            _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def recover_dir(target: Path) -> None:
    """Undo what a crash inside `atomic_dir` left beside `target`: half-written `.NAME.tmp-*`
    folders are removed; a `.NAME.old-*` folder is the last complete version, put back when
    `target` is missing and removed otherwise."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for leftover in sorted(target.parent.glob(f".{target.name}.old-*")):
        if not target.exists() and any(leftover.iterdir()):
            os.replace(leftover, target)
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> Path:
    """Replace the file at `path` with `text` in one rename, after an fsync: a reader or a
    crash sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON at `path`, atomically (see `atomic_write_text`)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_report_json(path: Path, data: dict) -> None:
    """Write a report (tables, studies) as strict JSON: NaN and infinities, which mean "undefined" in a
    report (a correlation over one point), become null, so any JSON parser reads it. State files that must
    round-trip a non-finite float (a checkpoint's best score of -inf before any evaluation) use `write_json`."""
    atomic_write_text(path, json.dumps(_finite_or_null(data), indent=2, allow_nan=False, default=str) + "\n")


def _finite_or_null(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def read_json(path: Path) -> dict:
    """A JSON object from `path` (a byte-order mark is allowed); anything else is one ConfigError line."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def resolve_prompt_dir(path: Path) -> Path:
    """A training output folder stands for its best prompt (OUT/best); any other folder for itself."""
    path = Path(path)
    return path / "best" if (path / "best").is_dir() else path


def save_prompt(
    path: Path,
    prompt: SavedPrompt,
    dtype: torch.dtype = torch.float32,
    also: Callable[[Path], None] | None = None,
) -> Path:
    """Save `prompt` as a folder at `path` (atomically); `dtype` float16 halves the file
    (the built-in library; `load_prompt` always returns float32); `also(folder)` writes what
    else belongs in it (a tuned model's weights) inside the same atomic swap."""

    def write(tmp: Path) -> None:
        save_file({"prompt": prompt.weight.detach().float().to(dtype).cpu().contiguous()}, tmp / PROMPT_FILE)
        write_json(tmp / META_FILE, prompt.meta())
        if also is not None:
            also(tmp)

    return atomic_dir(Path(path), write)


def load_prompt(path: Path, weights_ok: bool = False) -> SavedPrompt:
    """Load a prompt folder written by `save_prompt` (or a PEFT adapter folder). A model-tuning
    or LoRA result (trained weights beside an empty prompt) is refused unless `weights_ok`:
    only `train`, `eval` and `predict` know how to load its weights."""
    path = Path(path)
    if not path.exists():
        recover_dir(path)  # a crash between atomic_dir's two renames left the last version aside
    if not path.exists():
        raise ConfigError(f"{path}: prompt folder not found")
    if (path / "adapter_config.json").exists() and not (path / META_FILE).exists():
        return import_peft(path)
    meta = read_json(path / META_FILE)
    # Model tuning and LoRA keep their weights beside an empty (0, H) prompt (see softprompt.tuning).
    if meta.get("method") in WEIGHT_METHODS and not weights_ok:
        raise ConfigError(
            f"{path}: a --method {meta['method']} result (trained weights, no prompt); use it with "
            "`softprompt eval` or `predict`"
        )
    weight = _load_tensor(path / PROMPT_FILE, "prompt", allow_empty=meta.get("method") in WEIGHT_METHODS)
    known = {"format_version", "model", "hidden_size", "prompt_length", "task", "init", "training", "metrics"}
    where = path / META_FILE
    try:
        model = ModelIdentity.from_dict(meta["model"])
    except (KeyError, TypeError, AttributeError):
        raise ConfigError(f"{where}: missing or malformed 'model' entry") from None
    for key, kind in (("task", dict), ("training", dict), ("metrics", dict), ("init", str)):
        if key in meta and not isinstance(meta[key], kind):
            raise ConfigError(f"{where}: '{key}' must be a JSON {'object' if kind is dict else 'string'}")
    for key, size in (("prompt_length", weight.shape[0]), ("hidden_size", weight.shape[1])):
        if key in meta and meta[key] != size:
            raise ConfigError(
                f"{path / PROMPT_FILE}: prompt is {weight.shape[0]}x{weight.shape[1]}, "
                f"but {META_FILE} records {key} {meta[key]!r}"
            )
    if weight.shape[1] != model.hidden_size:
        raise ConfigError(
            f"{path / PROMPT_FILE}: prompt width {weight.shape[1]} != the model's hidden size "
            f"{model.hidden_size} recorded in {META_FILE}"
        )
    return SavedPrompt(
        weight=weight,
        model=model,
        task=meta.get("task", {}),
        init=meta.get("init", "unknown"),
        training=meta.get("training", {}),
        metrics=meta.get("metrics", {}),
        extra={k: v for k, v in meta.items() if k not in known},
    )


def _load_tensor(path: Path, key: str, allow_empty: bool = False) -> torch.Tensor:
    try:
        tensors = load_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (SafetensorError, OSError) as err:
        raise ConfigError(f"{path}: not a readable safetensors file ({err})") from None
    if key not in tensors:
        raise ConfigError(f"{path}: no tensor named {key!r} (found {', '.join(tensors) or 'none'})")
    weight = tensors[key].float()
    if weight.ndim != 2 or weight.shape[0] < (0 if allow_empty else 1) or weight.shape[1] < 1:
        raise ConfigError(
            f"{path}: {key!r} must be (length, hidden) with both at least 1, found shape {tuple(weight.shape)}"
        )
    if not torch.isfinite(weight).all():
        raise ConfigError(f"{path}: {key!r} holds non-finite values (NaN or inf)")
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
        reparam: The parameters of a reparameterised prompt (`reparam.PromptParams.state_dict()`),
            whose fold is `prompt`; None for a plain prompt (the prompt is the parameter).
        weights: Trained model weights by name (model tuning, LoRA), or None (a prompt).
    """

    prompt: SavedPrompt
    optimizer: dict
    schedule: dict
    counters: dict
    average: torch.Tensor | None = None
    reparam: dict[str, torch.Tensor] | None = None
    weights: dict[str, torch.Tensor] | None = None


REPARAM_PREFIX = "reparam/"  # keys of the reparameterisation's tensors in optimizer.safetensors


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` as a folder at `path` (atomically): tensors as safetensors, the rest JSON."""
    tensors, scalars = {}, {}
    if checkpoint.average is not None:
        tensors["average"] = checkpoint.average.detach().cpu().contiguous()
    for name, value in (checkpoint.reparam or {}).items():
        tensors[REPARAM_PREFIX + name] = value.detach().cpu().contiguous()
    for pid, slots in checkpoint.optimizer["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value

    def write(tmp: Path) -> None:
        save_prompt(tmp / "prompt", checkpoint.prompt)
        save_file(tensors or {"_empty": torch.zeros(0)}, tmp / "optimizer.safetensors")
        if checkpoint.weights is not None:
            weights = {k: v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()}
            save_file(weights, tmp / "weights.safetensors")
        write_json(
            tmp / "trainer.json",
            {
                **checkpoint.counters,
                "optimizer_scalars": scalars,
                "param_groups": checkpoint.optimizer["param_groups"],
                "schedule": checkpoint.schedule,
            },
        )

    return atomic_dir(Path(path), write)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a folder written by `save_checkpoint`."""
    path = Path(path)
    meta = read_json(path / "trainer.json")
    tensors = load_file(path / "optimizer.safetensors")
    average = tensors.pop("average", None)
    reparam = {k[len(REPARAM_PREFIX) :]: tensors.pop(k) for k in list(tensors) if k.startswith(REPARAM_PREFIX)}
    state: dict = {}
    for key, value in tensors.items():
        if key != "_empty":
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for key, value in meta["optimizer_scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    counters = {k: meta[k] for k in ("step", "best_score", "best_step", "evals_since_best")}
    weights = load_file(path / "weights.safetensors") if (path / "weights.safetensors").is_file() else None
    return Checkpoint(
        load_prompt(path / "prompt", weights_ok=True),
        {"state": state, "param_groups": meta["param_groups"]},
        meta["schedule"],
        counters,
        average,
        reparam or None,
        weights,
    )


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
        raise ConfigError(
            f"{path / 'adapter_config.json'}: peft_type is {config.get('peft_type')!r}, expected 'PROMPT_TUNING'"
        )
    weight = _load_tensor(path / "adapter_model.safetensors", "prompt_embeddings")
    tokens = config.get("num_virtual_tokens", weight.shape[0])
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= weight.shape[0]:
        raise ConfigError(
            f"{path / 'adapter_config.json'}: num_virtual_tokens must be an integer from 1 to "
            f"{weight.shape[0]} (the stored prompt's rows), got {tokens!r}"
        )
    weight = weight[:tokens]  # the encoder prompt
    if (path / META_FILE).exists():
        meta = read_json(path / META_FILE)
        try:
            model = ModelIdentity.from_dict(meta["model"])
        except (KeyError, TypeError, AttributeError):
            raise ConfigError(f"{path / META_FILE}: missing or malformed 'model' entry") from None
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
