"""Resolve a recipe: defaults + recipes/<name>.yaml + key=value overrides, with the hashes of its data.

    python -m pipeline.commands.resolve --recipe llama31-8b-tools [key=value ...]           # print it
    python -m pipeline.commands.resolve --recipe llama31-8b-tools --run mine --write [...]  # runs/mine/recipe.yaml

With --write the file is rewritten only when its content changes, so that Make sees a change of
recipe, overrides or data (every stage depends on it) and nothing else.
"""

from __future__ import annotations

import sys

from pipeline.lib.common import command, write_text_atomic
from pipeline.lib.recipe import resolved_yaml


def main(argv: list[str] | None = None) -> None:
    def body(recipe, run_dir, args):
        text = resolved_yaml(recipe)
        if not args.write:
            sys.stdout.write(text)
            return None
        target = run_dir / "recipe.yaml"
        if not target.exists() or target.read_text() != text:
            write_text_atomic(target, text)
        return None

    command("resolve", __doc__, argv, body,
            lambda ap: ap.add_argument("--write", action="store_true", help="save runs/<RUN>/recipe.yaml"))


if __name__ == "__main__":
    main()
