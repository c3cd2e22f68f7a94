"""The benchmark suite: train one prompt per task, evaluate diagnostics and shift sets with
the prompt of their source task, and report a paper-style table (JSON, Markdown, PNG).

    suite.py     which tasks a run holds, training / reusing / evaluating each one
    table.py     per-task scores, multi-metric and over-seed averages, Markdown and bar chart

`softprompt bench` is cli/bench.py.
"""

from softprompt.bench.suite import BenchConfig, plan_tasks, resolve_suite, run_bench
from softprompt.bench.table import build_table, render_markdown

__all__ = ["BenchConfig", "build_table", "plan_tasks", "render_markdown", "resolve_suite", "run_bench"]
