"""Plan: how much GPU memory and time a recipe needs, before any weights move.

    python -m pipeline.commands.plan --recipe llama31-8b-tools [--run RUN] [key=value ...]
    make plan RECIPE=llama31-8b-tools

Reads only shapes (a local config.json, the Hugging Face cache offline, or the table below), so it
runs with no GPU and no hub. Prints the VRAM breakdown, the trainable LoRA parameters, fit / no-fit
on the four GPU classes (and the change that makes a no-fit fit), and the wall time; writes
runs/<RUN>/plan.json. The load stage calls `show_plan` before it loads anything.

Units: GiB (2^30 bytes) throughout, as nvidia-smi, PyTorch's memory stats and the GPU table
(an "RTX 4090 24 GB" has 24 GiB) count them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.lib.common import command, write_json_atomic
from pipeline.lib.planner import show_plan
from pipeline.lib.recipe import Recipe

# --- the plan -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    def body(recipe: Recipe, run_dir: Path, _args) -> Path:
        return write_json_atomic(run_dir / "plan.json", show_plan(recipe, run_dir))

    command("plan", __doc__, argv, body)


if __name__ == "__main__":
    main(sys.argv[1:])
