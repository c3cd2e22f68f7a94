"""Studies after Lester et al. (2021): `scale` (Fig. 1: methods across model sizes), `length`
and `init` (Fig. 3). plan.py: settings and cells; run.py: training them resumably;
table.py: the table and the figure."""

from softprompt.study.plan import Cell, Kind, StudyConfig, plan
from softprompt.study.run import run_study
from softprompt.study.table import render_markdown

__all__ = ["Cell", "Kind", "StudyConfig", "plan", "render_markdown", "run_study"]
