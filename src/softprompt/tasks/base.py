"""The task protocol: examples, templates and verbalizers as data.

A task is a `Task` value: a name, a T5-style template that turns an example's fields
into the model's input text, and either a verbalizer (class label -> label words, for
rank classification) or nothing (free-form generation), plus the metrics to report and
a loader per split. The training loop and the evaluator only ever see `Example`s and a
`Task`; no task-specific code lives in them.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from softprompt.errors import ConfigError, DataError


@dataclass(frozen=True)
class Example:
    """One input/target pair.

    Attributes:
        fields: Raw text fields named by the template, e.g. {"sentence": "..."}.
        target: Gold output. For classification tasks the class label (a key of the
            task's verbalizer); for generation tasks the reference text trained on.
        answers: Every acceptable reference for generation metrics (SQuAD, ReCoRD);
            empty means just `target`.
        choices: Per-example candidate outputs for rank classification (ReCoRD
            entities, WSC); None means the task's verbalizer.
        group: Grouping key for grouped metrics (MultiRC question id).
        source: "file:line" the example came from, for error messages.
    """

    fields: Mapping[str, str]
    target: str
    answers: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    group: str | None = None
    source: str = ""

    @property
    def references(self) -> tuple[str, ...]:
        return self.answers or (self.target,)


Loader = Callable[[str], list[Example]]


@dataclass(frozen=True)
class Task:
    """A task as data.

    Attributes:
        name: Registry name, lower case (e.g. "sst2").
        template: `str.format` template over the example fields, e.g.
            "sst2 sentence: {sentence}".
        verbalizer: Class label -> label words, in a fixed order. None for
            generation tasks.
        metrics: Names in `softprompt.tasks.metrics.METRICS`, the first is primary.
        loader: Callable(split) -> examples.
        splits: Split names the loader accepts.
        description: One line for `--help` and listings, including any carved split.
        max_new_tokens: Generation budget for generation tasks.
    """

    name: str
    template: str
    verbalizer: Mapping[str, str] | None
    metrics: tuple[str, ...]
    loader: Loader
    splits: tuple[str, ...] = ("train", "dev")
    description: str = ""
    max_new_tokens: int = 16
    template_fields: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        try:
            names = tuple(f for _, f, _, _ in string.Formatter().parse(self.template) if f is not None)
        except ValueError as err:  # "Single '}' encountered", "expected '}' before end of string"
            raise ConfigError(
                f"task {self.name!r}: template {self.template!r}: {err} (write {{{{ }}}} for a literal brace)"
            ) from None
        positional = [f for f in names if f == "" or f.isdigit()]
        if positional:
            raise ConfigError(
                f"task {self.name!r}: template {self.template!r} has a positional field {{{positional[0]}}}: "
                "name the data field, e.g. {text}"
            )
        names = tuple(dict.fromkeys(n.split(".")[0].split("[")[0] for n in names))
        if not names:
            raise ConfigError(f"task {self.name!r}: template {self.template!r} names no field")
        object.__setattr__(self, "template_fields", names)
        if self.verbalizer is not None and len(self.verbalizer) < 2:
            raise ConfigError(f"task {self.name!r}: a verbalizer needs at least 2 labels")

    @property
    def is_classification(self) -> bool:
        return self.verbalizer is not None

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.verbalizer or ())

    def format(self, example: Example) -> str:
        """The model input text for `example`."""
        try:
            return self.template.format(**example.fields)
        except KeyError as missing:
            where = f"{example.source}: " if example.source else ""
            raise DataError(f"{where}field {missing} needed by the template of task {self.name!r} is missing") from None

    def candidates(self, example: Example) -> tuple[str, ...]:
        """Candidate label words for rank classification of `example`."""
        if example.choices is not None:
            return example.choices
        if self.verbalizer is None:
            raise ConfigError(f"task {self.name!r} is a generation task: it has no labels to rank")
        return tuple(self.verbalizer.values())

    def target_text(self, example: Example) -> str:
        """The text the model is trained to produce for `example`."""
        if self.verbalizer is None or example.choices is not None:
            return example.target
        try:
            return self.verbalizer[example.target]
        except KeyError:
            where = f"{example.source}: " if example.source else ""
            raise DataError(
                f"{where}label {example.target!r} is not in the verbalizer of task "
                f"{self.name!r} (expected one of {', '.join(self.verbalizer)})"
            ) from None

    def meta(self) -> dict:
        """What a prompt trained on this task records as its task (`task_from_meta` reads it)."""
        return {
            "name": self.name,
            "template": self.template,
            "verbalizer": dict(self.verbalizer) if self.verbalizer else None,
            "metrics": list(self.metrics),
            "description": self.description,
        }

    def load(self, split: str) -> list[Example]:
        if split not in self.splits:
            raise ConfigError(f"task {self.name!r} has no split {split!r} (available: {', '.join(self.splits)})")
        examples = self.loader(split)
        if not examples:
            raise DataError(f"task {self.name!r}: split {split!r} is empty")
        return examples


_REGISTRY: dict[str, Callable[[], Task]] = {}


def register(name: str) -> Callable[[Callable[[], Task]], Callable[[], Task]]:
    """Register a zero-argument task factory under `name` (lower case)."""

    def wrap(factory: Callable[[], Task]) -> Callable[[], Task]:
        _REGISTRY[name.lower()] = factory
        return factory

    return wrap


def task_names() -> Sequence[str]:
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The registered task called `name` (case-insensitive)."""
    factory = _REGISTRY.get(name.lower())
    if factory is None:
        raise ConfigError(
            f"unknown task {name!r} (known: {', '.join(task_names())}; "
            "or describe a task from your own files with --train-file/--dev-file)"
        )
    return factory()


def task_from_meta(meta: Mapping) -> Task:
    """A task rebuilt from a saved prompt's task metadata (template, verbalizer, metrics).

    It has no data (no splits): enough to predict with a prompt trained on a user's files.
    """
    if not meta or not meta.get("template"):
        raise ConfigError("the prompt records no task template: name one with --task")

    def no_data(split: str) -> list[Example]:
        raise ConfigError(f"task {meta['name']!r} came from its prompt's metadata and has no data: give --dev-file")

    return Task(
        name=meta.get("name") or "custom",
        template=meta["template"],
        verbalizer=meta.get("verbalizer"),
        metrics=tuple(meta.get("metrics") or ("accuracy",)),
        loader=no_data,
        splits=(),
        description=meta.get("description", ""),
    )


def saved_task(meta: Mapping | None) -> Task:
    """The task a saved prompt means: a built-in task by its recorded name, else the
    template and label words recorded with the prompt (`task_from_meta`)."""
    name = (meta or {}).get("name")
    if name and name.lower() in _REGISTRY:
        return get_task(name)
    return task_from_meta(meta or {})


EVAL_SEED = 1234  # the seed of dev_sample: --max-eval draws the same dev examples everywhere


def dev_sample(examples: Sequence[Example], max_eval: int | None) -> list[Example]:
    """At most `max_eval` examples, drawn with `EVAL_SEED` (so `train --max-eval`, `eval`, the
    studies and the benchmarks score the same dev sample), else all of them in order."""
    if max_eval and max_eval < len(examples):
        return random.Random(EVAL_SEED).sample(list(examples), max_eval)
    return list(examples)
