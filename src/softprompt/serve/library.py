"""The prompts a server offers: every prompt folder of a library folder that fits its model.

A library is, for now, a folder of prompt folders (prompt.json + prompt.safetensors, or a
training output folder whose best/ holds them), each served under its folder name for the
task recorded in its prompt.json, plus an optional ensembles.json:

    {"sst2-ensemble": {"prompts": ["sst2-a", "sst2-b", "sst2-c"], "combine": "mean"}}

`scan_library` is the one function that reads the folder; swap it when the SPoT prompt
library lands. `Library.refresh` re-reads only what changed (an mtime check per folder),
so prompts added, retrained or removed while a server runs are picked up without restart.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from softprompt.errors import SoftPromptError
from softprompt.ensemble import ENSEMBLE_METHODS
from softprompt.io import META_FILE, PROMPT_FILE, SavedPrompt, import_peft, load_prompt, read_json, resolve_prompt_dir
from softprompt.models.identity import ModelIdentity
from softprompt.scoring.prepared import PreparedPrompt
from softprompt.tasks.base import Example, Task, saved_task

log = logging.getLogger("softprompt.serve")

ENSEMBLES_FILE = "ensembles.json"


@dataclass
class ServedPrompt:
    """One loaded prompt. `prepared` (`PromptedLM.prepare` of its weight: the weight plus, on
    the fast backend, its key/value states) is filled by the model thread on first use."""

    name: str
    path: Path
    saved: SavedPrompt
    task: Task
    weight: torch.Tensor  # (P, H) on the model's device
    stamp: tuple
    prepared: PreparedPrompt | None = None

    def info(self) -> dict:
        return {
            "name": self.name,
            "task": self.task.name,
            "kind": "classify" if self.task.is_classification else "generate",
            "labels": list(self.task.labels),
            "template": self.task.template,
            "prompt_length": self.saved.length,
            "model": self.saved.model.name,
            "init": self.saved.init,
            "dev_metrics": self.saved.metrics,
            "path": self.name if self.path.name != "best" else f"{self.name}/best",  # never the server's absolute path
        }

    def dev_score(self) -> float:
        value = self.saved.metrics.get(self.task.metrics[0])
        return float(value) if isinstance(value, (int, float)) else float("-inf")


@dataclass(frozen=True)
class Ensemble:
    name: str
    prompts: tuple[str, ...]
    method: str = "mean"


@dataclass
class Scan:
    """What a library folder holds: prompts by name, ensembles, and what was skipped, why."""

    prompts: dict[str, ServedPrompt] = field(default_factory=dict)
    ensembles: dict[str, Ensemble] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _stamp(folder: Path) -> tuple:
    """Cheap change marker of a prompt folder: (size, mtime) of its files."""
    out = []
    for name in (META_FILE, PROMPT_FILE, "adapter_config.json", "adapter_model.safetensors"):
        try:
            st = os.stat(folder / name)
        except OSError:
            continue
        out.append((name, st.st_size, st.st_mtime_ns))
    return (str(folder), tuple(out))


def scan_library(
    root: Path, identity: ModelIdentity, device: torch.device, known: dict[str, ServedPrompt] | None = None
) -> Scan:
    """Load every prompt folder under `root` made for the model `identity`.

    Folders whose stamp matches an entry of `known` are reused as they are (with their
    prepared prompt); others are (re)loaded. Folders that fail to load for any reason (a
    malformed file, a folder removed mid-scan, a bug in a reader) or belong to another model
    are skipped, with the reason: one bad folder never stops the others being served.
    Reasons name files relative to `root` (clients see them; the server's paths stay private).
    """
    known = known or {}
    scan = Scan()
    try:
        entries = sorted(Path(root).iterdir())
    except OSError as err:
        scan.skipped["."] = f"library folder unreadable ({err.strerror or type(err).__name__})"
        return scan
    for entry in entries:
        try:
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            folder = resolve_prompt_dir(entry)
            stamp = _stamp(folder)
            if entry.name in known and known[entry.name].stamp == stamp:
                scan.prompts[entry.name] = known[entry.name]
                continue
            scan.prompts[entry.name] = _load_served_prompt(entry.name, folder, stamp, identity, device)
        except Exception as err:  # noqa: BLE001 - any failure skips this folder only
            scan.skipped[entry.name] = public_message(err, root)
    try:
        scan.ensembles, bad = read_ensembles(Path(root) / ENSEMBLES_FILE, scan.prompts)
    except Exception as err:  # noqa: BLE001
        scan.ensembles, bad = {}, {ENSEMBLES_FILE: public_message(err, root)}
    scan.skipped.update({name: public_message(reason, root) for name, reason in bad.items()})
    return scan


def public_message(err: BaseException | str, root: Path) -> str:
    """One line for clients: `err` with the library folder's absolute path cut to names
    inside it (SoftPromptError text as is; other exceptions as their type and text)."""
    text = (
        err
        if isinstance(err, str)
        else str(err)
        if isinstance(err, SoftPromptError)
        else f"{type(err).__name__}: {err}"
    )
    for prefix in {str(Path(root).resolve()), str(Path(root)), str(Path(root).absolute())}:
        text = text.replace(prefix + os.sep, "").replace(prefix, ".")
    return " ".join(text.split())


def _load_served_prompt(
    name: str, folder: Path, stamp: tuple, identity: ModelIdentity, device: torch.device
) -> ServedPrompt:
    if not any(f == META_FILE or f == "adapter_config.json" for f, _, _ in stamp[1]):
        raise SoftPromptError(f"{folder}: no {META_FILE} (not a prompt folder, or training has not saved one yet)")
    saved = load_prompt(folder)
    if saved.model.fingerprint == "unknown":  # a PEFT adapter: adopt the model after a width check
        saved = import_peft(folder, identity)
    identity.check_compatible(saved.model, f"prompt {folder}")
    return ServedPrompt(name, folder, saved, saved_task(saved.task), saved.weight.to(device), stamp)


def read_ensembles(path: Path, prompts: dict[str, ServedPrompt]) -> tuple[dict[str, Ensemble], dict[str, str]]:
    """Ensembles named in `path` whose members are all loaded and share their labels."""
    if not path.exists():
        return {}, {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
        return {}, {ENSEMBLES_FILE: f"{path}: unreadable ({err})"}
    if not isinstance(data, dict):
        return {}, {ENSEMBLES_FILE: f"{path}: expected an object of name -> {{prompts, combine}}"}
    ensembles, skipped = {}, {}
    for name, spec in data.items():
        spec = {"prompts": spec} if isinstance(spec, list) else spec
        members = spec.get("prompts") if isinstance(spec, dict) else None
        method = spec.get("combine", "mean") if isinstance(spec, dict) else None
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            skipped[name] = f"{path}: ensemble {name!r} needs a non-empty list 'prompts'"
        elif not isinstance(method, str) or method not in ENSEMBLE_METHODS:
            skipped[name] = f"{path}: ensemble {name!r}: combine {method!r} is not one of {', '.join(ENSEMBLE_METHODS)}"
        elif missing := [m for m in members if m not in prompts]:
            skipped[name] = f"{path}: ensemble {name!r}: prompt(s) {', '.join(missing)} not loaded"
        elif reason := ensemble_mismatch([prompts[m] for m in members]):
            skipped[name] = f"{path}: ensemble {name!r}: {reason}"
        else:
            ensembles[name] = Ensemble(name, tuple(members), method)
    return ensembles, skipped


def ensemble_mismatch(members: list[ServedPrompt]) -> str | None:
    """Why these prompts cannot answer together (different labels or kinds), or None."""
    first = members[0]
    for m in members[1:]:
        if m.task.labels != first.task.labels or m.task.is_classification != first.task.is_classification:
            labels_a, labels_b = "/".join(first.task.labels) or "generation", "/".join(m.task.labels) or "generation"
            return f"prompts {first.name!r} and {m.name!r} have different labels ({labels_a} vs {labels_b})"
    return None


class Library:
    """The served prompts of a folder, refreshed when its contents change.

    Args:
        root: The library folder.
        identity: The loaded model's identity; prompts of other models are skipped.
        device: Where prompt tensors go.
    """

    def __init__(self, root: Path, identity: ModelIdentity, device: torch.device) -> None:
        self.root = Path(root)
        self.identity = identity
        self.device = device
        self.scan = Scan()
        self._marker: tuple | None = None
        self._lock = threading.Lock()  # one rescan at a time (requests may ask from several threads)
        self.refresh()

    def _current_marker(self) -> tuple:
        """Stamps of every entry and of ensembles.json: changes when anything is added,
        removed or rewritten (prompt folders are replaced by rename, so their files change)."""
        try:
            entries = sorted(e.name for e in os.scandir(self.root) if not e.name.startswith("."))
        except OSError:
            return ()
        try:
            st = os.stat(self.root / ENSEMBLES_FILE)
            ensembles = (st.st_size, st.st_mtime_ns)
        except OSError:
            ensembles = None
        return tuple((name, _stamp(resolve_prompt_dir(self.root / name))) for name in entries) + (ensembles,)

    def refresh(self) -> bool:
        """Rescan if anything changed; True if it did. Blocking (file reads): call it off the event loop."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        try:
            marker = self._current_marker()
        except Exception:  # noqa: BLE001 - an entry vanished mid-listing: rescan
            marker = None
        if marker is not None and marker == self._marker:
            return False
        scan = scan_library(self.root, self.identity, self.device, self.scan.prompts)
        for name, reason in scan.skipped.items():
            if self.scan.skipped.get(name) != reason:
                log.warning("skipped %s: %s", name, reason)
        for name in scan.prompts.keys() - self.scan.prompts.keys():
            log.info("serving prompt %s (task %s)", name, scan.prompts[name].task.name)
        self.scan, self._marker = scan, marker
        return True

    def resolve(self, name: str) -> tuple[list[ServedPrompt], str]:
        """The prompts that answer for `name` and how to combine them: an ensemble, a
        prompt (folder name), or a task (its prompt with the best dev score). KeyError if none."""
        scan = self.scan
        if name in scan.ensembles:
            ens = scan.ensembles[name]
            return [scan.prompts[m] for m in ens.prompts], ens.method
        if name in scan.prompts:
            return [scan.prompts[name]], "mean"
        return [self.for_task(name)], "mean"

    def for_task(self, task: str) -> ServedPrompt:
        matches = [p for p in self.scan.prompts.values() if p.task.name.lower() == task.lower()]
        if not matches:
            raise KeyError(task)
        return max(sorted(matches, key=lambda p: p.name), key=ServedPrompt.dev_score)

    def names(self) -> dict[str, dict]:
        """Every name a request may use, with what it serves."""
        out: dict[str, dict] = {}
        for task in sorted({p.task.name for p in self.scan.prompts.values()}):
            chosen = self.for_task(task)
            out[task] = {"kind": chosen.info()["kind"], "prompts": [chosen.name]}
        for p in self.scan.prompts.values():
            out[p.name] = {"kind": p.info()["kind"], "prompts": [p.name]}
        for e in self.scan.ensembles.values():
            kind = self.scan.prompts[e.prompts[0]].info()["kind"]
            out[e.name] = {"kind": kind, "prompts": list(e.prompts), "combine": e.method}
        return out


def make_example(task: Task, value: str | dict) -> Example:
    """An input for `task`: a string fills its first template field (others empty, as
    `softprompt predict` does), or a mapping gives every field. ValueError if a field is missing."""
    if isinstance(value, str):
        fields = {f: value if f == task.template_fields[0] else "" for f in task.template_fields}
    else:
        missing = [f for f in task.template_fields if f not in value]
        if missing:
            raise ValueError(f"task {task.name!r} needs field(s) {', '.join(missing)} (template {task.template!r})")
        fields = {f: str(value[f]) for f in task.template_fields}
    return Example(fields, task.labels[0] if task.labels else "")


def library_model(library: Path) -> str | None:
    """The model the library's prompts were trained on (the first that names one), else None."""
    for entry in sorted(Path(library).iterdir()):
        meta = resolve_prompt_dir(entry) / META_FILE
        if meta.is_file():
            try:
                name = read_json(meta).get("model", {}).get("name")
            except Exception:  # unreadable: the library scan reports it
                continue
            if name:
                return name
    return None
