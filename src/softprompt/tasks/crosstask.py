"""Use a prompt on a task it was not trained on (SST-2 -> IMDB, MNLI -> SNLI/ANLI, RTE <-> MNLI).

The target task supplies the data, template and metrics. The label words are the
prompt's where it knows the label: a prompt trained to answer "good" for `positive`
keeps answering "good" on any task with a `positive` label. Labels the prompt never saw
(`not_entailment` for an MNLI prompt) keep the target task's words, which the built-in
tasks share by kind ("yes"/"no"/"maybe"). A prompt with neither a label nor a label word
in common with the task cannot be scored on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from softprompt.errors import ConfigError
from softprompt.tasks.base import Task


def task_for_prompt(task: Task, prompt_task: Mapping | None, where: str = "the prompt") -> Task:
    """`task` with its label words taken from the prompt's verbalizer by label name.

    Args:
        task: The task to evaluate on.
        prompt_task: The prompt's saved task metadata (`SavedPrompt.task`: name,
            verbalizer, ...). Empty or without a "verbalizer" entry (an imported PEFT
            adapter) leaves `task` unchanged.
        where: How to name the prompt in messages (its folder).

    Raises:
        ConfigError: The prompt's labels and the task's have nothing in common, one of
            them is a generation task and the other is not, or two labels would get the
            same word.
    """
    if not prompt_task or "verbalizer" not in prompt_task:
        return task
    source = prompt_task.get("name") or "?"
    theirs: Mapping[str, str] | None = prompt_task["verbalizer"]
    if theirs is None or task.verbalizer is None:
        if theirs is None and task.verbalizer is None:
            return task
        kinds = {True: "generation task", False: "classification task"}
        raise ConfigError(
            f"{where} was trained on {kinds[theirs is None]} {source!r} and cannot be scored on "
            f"{kinds[task.verbalizer is None]} {task.name!r}"
        )
    if dict(theirs) == dict(task.verbalizer):
        return task
    shared_labels = set(theirs) & set(task.verbalizer)
    shared_words = set(theirs.values()) & set(task.verbalizer.values())
    if not shared_labels and not shared_words:
        raise ConfigError(
            f"{where} was trained on {source!r} with labels {_show(theirs)}; task {task.name!r} has labels "
            f"{_show(task.verbalizer)}: no label or label word in common"
        )
    words = {label: theirs.get(label, word) for label, word in task.verbalizer.items()}
    if len(set(words.values())) < len(words):
        raise ConfigError(
            f"{where} was trained on {source!r} with labels {_show(theirs)}; mapped by label name, task "
            f"{task.name!r} would get {_show(words)}, where two labels share a word"
        )
    return dataclasses.replace(task, verbalizer=words)


def _show(verbalizer: Mapping[str, str]) -> str:
    return ", ".join(f"{label}={word!r}" for label, word in verbalizer.items())
