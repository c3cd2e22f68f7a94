"""Tasks as data: registry, readers, metrics. Importing this registers the built-in tasks."""

from softprompt.tasks import sentiment  # noqa: F401  (registers sst2, imdb)
from softprompt.tasks import glue, qa, superglue  # noqa: F401  (register GLUE, SuperGLUE, QA)
from softprompt.tasks.base import Example, Task, dev_sample, get_task, register, saved_task, task_names
from softprompt.tasks.metrics import compute_metrics
from softprompt.tasks.user import parse_label_words, user_task

__all__ = [
    "Example",
    "Task",
    "compute_metrics",
    "dev_sample",
    "get_task",
    "parse_label_words",
    "register",
    "saved_task",
    "task_names",
    "user_task",
]
