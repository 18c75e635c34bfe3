"""Where a run stands: one row per stage, from the sidecars.

    python -m pipeline.commands.status --run smollm2-135m-tools
"""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from pipeline.lib import stages
from pipeline.lib.common import console, rel
from pipeline.lib.recipe import RecipeError, fail, run_dir_for


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="smollm2-135m-tools")
    ap.add_argument("--since", type=float, default=None, help="unix time the make run started: marks stages redone")
    a = ap.parse_args(argv)
    try:
        run_dir = run_dir_for(a.run)
    except RecipeError as e:
        fail(str(e))
    t = Table(title=f"runs/{a.run}")
    for c in ("stage", "state", "wall time", "finished"):
        t.add_column(c)
    redone = 0
    for stage in stages.CHAIN:
        side = run_dir / stage / "stage.json"
        if not side.is_file():
            t.add_row(stage, "[red]missing[/]", "", "")
            continue
        doc = json.loads(side.read_text())
        fresh = a.since is not None and side.stat().st_mtime >= a.since
        redone += fresh
        t.add_row(stage, "[green]ran now[/]" if fresh else "up to date", f"{doc['wall_time_s']:.1f} s", doc["finished"])
    console.print(t)
    if a.since is not None and redone == 0:
        console.print("nothing changed (recipe, data, code): no stage was re-run.")
    report = run_dir / "evaluate" / "report.md"
    if report.is_file():
        console.print(f"evaluation: {rel(report)}")
    page = run_dir / "report.html"
    if page.is_file():
        console.print(f"run report: {rel(page)} (open it in a browser; `make report` rebuilds it)")


if __name__ == "__main__":
    main()
