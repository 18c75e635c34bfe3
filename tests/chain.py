"""Stages as Make runs them: the stage's own entry point, then the run report's refresh (Make's `REPORT` line)."""

from __future__ import annotations

from pipeline.commands import report


def run_stage(module, recipe: str, run: str, args: list[str]) -> None:
    module.main(["--recipe", recipe, "--run", run, *args])
    report.main(["--run", run, "--after-stage"])
