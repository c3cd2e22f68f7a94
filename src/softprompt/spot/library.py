"""A prompt library: trained source prompts and their task embeddings, in one folder.

Layout (one subfolder per entry; nothing else is read):

    LIBRARY/
      <name>/                 name: letters, digits, . _ + - (e.g. "mnli", "mnli+snli")
        best/                 prompt folder (prompt.safetensors + prompt.json): the prompt to
                              transfer from / to serve
        embedding/            prompt folder: the task embedding, the prompt at an early step
                              (train --embed-step); absent -> best/ stands in for it
        entry.json            {"name", "task", "tasks" (the member tasks whose data trained it),
                              "model": {name, fingerprint, hidden_size, architecture},
                              "metrics": best/'s dev metrics, "embed_step", "has_embedding",
                              "added_from", "added_at"; entries made by `library build` add
                              "training", "steps_done", "best_step", "early_stopped",
                              "stored_dtype", "rebuild_command" and "chance" (the dev
                              sample's constant baseline and whether the prompt beat it:
                              spot/chance.py; `library baselines` adds it to older entries)}

The built-in library ships with the package (`builtin_root()`: softprompt/pretrained/, or
$SOFTPROMPT_PRETRAINED): one library folder per model plus index.json, which maps each
model's fingerprint to its folder. Commands given no --library use the folder of the loaded
model (`builtin_for`); it is filled only by `softprompt library build --builtin`.

Entries are written to a temporary sibling and renamed into place, so a reader (a serving
worker, `softprompt similar`) never sees half an entry; folders starting with "." are
temporary and skipped. `entries(library)` is all a reader needs.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from softprompt.errors import ConfigError
from softprompt.io import META_FILE, PROMPT_FILE, atomic_dir, load_prompt, read_json, save_prompt, write_json
from softprompt.models.identity import ModelIdentity

ENTRY_FILE = "entry.json"
INDEX_FILE = "index.json"
PRETRAINED_ENV = "SOFTPROMPT_PRETRAINED"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# Tasks that read the same examples under two names: a target never starts from either.
SAME_DATA = {"rte_glue": "rte"}


@dataclass(frozen=True)
class Entry:
    """One library entry: its folder and entry.json."""

    name: str
    path: Path
    meta: dict

    @property
    def prompt_dir(self) -> Path:
        return self.path / "best"

    @property
    def embedding_dir(self) -> Path:
        return self.path / "embedding" if (self.path / "embedding").is_dir() else self.path / "best"

    @property
    def model(self) -> ModelIdentity:
        return ModelIdentity.from_dict(self.meta["model"])

    @property
    def tasks(self) -> set[str]:
        """The tasks whose training data made this prompt (a mixture's members), data aliases merged."""
        names = self.meta.get("tasks") or str(self.meta.get("task") or self.name).split("+")
        return {SAME_DATA.get(n, n) for n in names}

    @property
    def learned(self) -> bool | None:
        """Whether the prompt beat its dev sample's constant baseline (None: not recorded)."""
        return (self.meta.get("chance") or {}).get("learned")

    def trained_on(self, task: str) -> bool:
        """Whether `task`'s own data trained this prompt (a target must not start from it)."""
        return SAME_DATA.get(task, task) in self.tasks


def entries(library_dir: Path, must_exist: bool = True) -> list[Entry]:
    """Every complete entry of the library, by name."""
    library_dir = Path(library_dir)
    if not library_dir.is_dir():
        if must_exist:
            raise ConfigError(f"--library {library_dir}: folder not found")
        return []
    found = []
    for path in sorted(library_dir.iterdir()):
        complete = (path / ENTRY_FILE).is_file() and (path / "best" / PROMPT_FILE).is_file()
        if path.name.startswith(".") or not complete:
            continue
        found.append(Entry(path.name, path, read_json(path / ENTRY_FILE)))
    return found


def get(library_dir: Path, name: str) -> Entry:
    for entry in entries(library_dir):
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries(library_dir)) or "none"
    raise ConfigError(f"--library {library_dir}: no entry named {name!r} (entries: {known})")


def add(
    library_dir: Path,
    run_dir: Path,
    name: str | None = None,
    overwrite: bool = False,
    *,
    dtype: torch.dtype = torch.float32,
    extra: dict | None = None,
) -> Entry:
    """Copy a training output folder (best/ and, if there, embedding/) into the library.

    Args:
        run_dir: A `softprompt train` output folder, or a bare prompt folder.
        name: Entry name; default: the prompt's task name.
        overwrite: Replace an entry of the same name.
        dtype: Storage precision of the copied prompts (float16: half the size; the built-in library).
        extra: More entry.json fields (training settings, the rebuild command).
    """
    run_dir = Path(run_dir)
    best = run_dir / "best" if (run_dir / "best").is_dir() else run_dir
    if not (best / META_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a training output folder or prompt folder (no best/{META_FILE})")
    saved = load_prompt(best)
    name = name or (saved.task or {}).get("name")
    if not name or not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: expected letters, digits and . _ + - (not starting with . _ + -)")
    target = Path(library_dir) / name
    if target.exists() and not overwrite:
        raise ConfigError(f"--library {library_dir}: entry {name!r} exists (use --overwrite to replace it)")
    embedding = run_dir / "embedding" if (run_dir / "embedding" / META_FILE).is_file() else None
    if embedding is not None:
        load_prompt(embedding).model.check_compatible(saved.model, f"{embedding} (the embedding of {best})")
    task = saved.task or {}
    meta = {
        "name": name,
        "task": task.get("name"),
        "tasks": [t["name"] for t in task["mixture"]] if task.get("mixture") else [task.get("name") or name],
        "model": saved.model.to_dict(),
        "metrics": saved.metrics,
        "embed_step": saved.training.get("embed_step"),
        "has_embedding": embedding is not None,
        "added_from": str(run_dir.resolve()),
        "added_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "stored_dtype": str(dtype).removeprefix("torch."),
        **(extra or {}),
    }

    def write(tmp: Path) -> None:
        for folder, where in ((best, "best"), (embedding, "embedding")):
            if folder is None:
                continue
            if dtype == torch.float32:
                shutil.copytree(folder, tmp / where, ignore=shutil.ignore_patterns(".*"))
            else:
                save_prompt(tmp / where, load_prompt(folder), dtype)
        write_json(tmp / ENTRY_FILE, meta)

    atomic_dir(target, write)
    return Entry(name, target, meta)


def update_meta(entry: Entry, **fields) -> Entry:
    """Add or replace entry.json fields (written atomically; the prompts are untouched)."""
    meta = {**entry.meta, **fields}
    write_json(entry.path / ENTRY_FILE, meta)
    return Entry(entry.name, entry.path, meta)


def remove(library_dir: Path, name: str) -> None:
    entry = get(library_dir, name)
    trash = entry.path.with_name(f".{entry.name}.removed-{time.time_ns()}")
    entry.path.rename(trash)  # readers never see a half-deleted entry
    shutil.rmtree(trash, ignore_errors=True)


def embeddings(
    library_dir: Path, identity: ModelIdentity, names: list[str] | None = None, at: str = "early"
) -> list[tuple[str, torch.Tensor]]:
    """(name, (P, H) task embedding) of the entries trained on the model `identity`; `at` early:
    the prompt at the embedding step (embedding/), late: the best prompt (best/)."""
    chosen = [e for e in entries(library_dir) if names is None or e.name in names]
    found = []
    for entry in chosen:
        if entry.meta.get("model", {}).get("fingerprint") == identity.fingerprint:
            folder = entry.embedding_dir if at == "early" else entry.prompt_dir
            found.append((entry.name, load_prompt(folder).weight))
    if not found:
        raise ConfigError(f"--library {library_dir}: no entry was trained on the loaded model {identity.name}")
    return found


def resolve_sources(items: list[str], library_dir: Path | None) -> dict[str, Path]:
    """Source prompts named on the command line (`transfer --source`): prompt folders, or names
    of entries of `library_dir`; keyed by a unique name (the folder's, or its run's for best/)."""
    found = {}
    for item in items:
        path = Path(item)
        if path.is_dir():
            name = path.name if path.name != "best" else path.parent.name
            found[name if name not in found else f"{name}-{len(found)}"] = path
        elif library_dir is not None:
            found[item] = get(library_dir, item).prompt_dir
        else:
            raise ConfigError(f"--source {item}: prompt folder not found (or give --library to name an entry)")
    return found


# -- the built-in library ---------------------------------------------------------------------


def builtin_root() -> Path:
    """Where the built-in library lives: $SOFTPROMPT_PRETRAINED, else the package's pretrained/."""
    return Path(os.environ.get(PRETRAINED_ENV) or Path(__file__).resolve().parent.parent / "pretrained")


def builtin_index(root: Path | None = None) -> dict:
    """index.json of the built-in library: {"models": {key: {name, fingerprint, hidden_size, entries, ...}}}."""
    path = (root or builtin_root()) / INDEX_FILE
    return read_json(path) if path.is_file() else {"models": {}}


def builtin_library(identity: ModelIdentity, root: Path | None = None) -> Path | None:
    """The built-in library folder of the model `identity` (by fingerprint), None if none is shipped."""
    root = root or builtin_root()
    for key, model in builtin_index(root).get("models", {}).items():
        if model.get("fingerprint") == identity.fingerprint and (root / key).is_dir():
            return root / key
    return None


def builtin_for(identity: ModelIdentity) -> Path:
    """The built-in library of the loaded model, or a one-line error saying none is shipped."""
    found = builtin_library(identity)
    if found is None or not entries(found, must_exist=False):
        shipped = ", ".join(builtin_index().get("models", {})) or "none yet"
        raise ConfigError(
            f"no --library given and the built-in library ({builtin_root()}) holds no prompts for "
            f"{identity.name} (shipped for: {shipped}); give --library DIR or build it with "
            "`softprompt library build --builtin`"
        )
    return found


def builtin_dir_for(identity: ModelIdentity, root: Path | None = None) -> Path:
    """The folder `library build --builtin` fills for `identity`: the existing one, else root/<model name>."""
    root = root or builtin_root()
    key = re.sub(r"[^A-Za-z0-9._+-]", "-", identity.name).lstrip("._+-") or "model"
    return builtin_library(identity, root) or root / key


def update_index(library_dir: Path, identity: ModelIdentity, command: str) -> dict:
    """Record `library_dir` (a folder of the built-in root) in index.json with its entries."""
    root = Path(library_dir).parent
    index = builtin_index(root)
    index.setdefault("format_version", 1)
    index.setdefault("models", {})[Path(library_dir).name] = {
        **identity.to_dict(),
        "entries": [e.name for e in entries(library_dir, must_exist=False)],
        "build_command": command,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_json(root / INDEX_FILE, index)
    return index
