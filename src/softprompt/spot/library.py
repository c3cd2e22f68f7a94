"""A prompt library: trained source prompts and their task embeddings, in one folder.

Layout (one subfolder per entry; nothing else is read):

    LIBRARY/
      <name>/                 name: letters, digits, . _ + - (e.g. "mnli", "mnli+snli")
        best/                 prompt folder (prompt.safetensors + prompt.json): the prompt to
                              transfer from / to serve
        embedding/            prompt folder: the task embedding, the prompt at an early step
                              (train --embed-step); absent -> best/ stands in for it
        entry.json            {"name", "task", "model": {name, fingerprint, hidden_size,
                              architecture}, "metrics": best/'s dev metrics, "embed_step",
                              "has_embedding", "added_from", "added_at"}

Entries are written to a temporary sibling and renamed into place, so a reader (a serving
worker, `softprompt similar`) never sees half an entry; folders starting with "." are
temporary and skipped. `entries(library)` is all a reader needs.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from softprompt.errors import ConfigError
from softprompt.io import META_FILE, PROMPT_FILE, atomic_dir, load_prompt, read_json, write_json
from softprompt.models.identity import ModelIdentity

ENTRY_FILE = "entry.json"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


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


def add(library_dir: Path, run_dir: Path, name: str | None = None, overwrite: bool = False) -> Entry:
    """Copy a training output folder (best/ and, if there, embedding/) into the library.

    Args:
        run_dir: A `softprompt train` output folder, or a bare prompt folder.
        name: Entry name; default: the prompt's task name.
        overwrite: Replace an entry of the same name.
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
    meta = {
        "name": name,
        "task": (saved.task or {}).get("name"),
        "model": saved.model.to_dict(),
        "metrics": saved.metrics,
        "embed_step": saved.training.get("embed_step"),
        "has_embedding": embedding is not None,
        "added_from": str(run_dir.resolve()),
        "added_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }

    def write(tmp: Path) -> None:
        shutil.copytree(best, tmp / "best", ignore=shutil.ignore_patterns(".*"))
        if embedding is not None:
            shutil.copytree(embedding, tmp / "embedding", ignore=shutil.ignore_patterns(".*"))
        write_json(tmp / ENTRY_FILE, meta)

    atomic_dir(target, write)
    return Entry(name, target, meta)


def remove(library_dir: Path, name: str) -> None:
    entry = get(library_dir, name)
    trash = entry.path.with_name(f".{entry.name}.removed-{time.time_ns()}")
    entry.path.rename(trash)  # readers never see a half-deleted entry
    shutil.rmtree(trash, ignore_errors=True)


def embeddings(
    library_dir: Path, identity: ModelIdentity, names: list[str] | None = None
) -> list[tuple[str, torch.Tensor]]:
    """(name, (P, H) task embedding) of the entries trained on the model `identity`."""
    chosen = [e for e in entries(library_dir) if names is None or e.name in names]
    found = []
    for entry in chosen:
        if entry.meta.get("model", {}).get("fingerprint") == identity.fingerprint:
            found.append((entry.name, load_prompt(entry.embedding_dir).weight))
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
