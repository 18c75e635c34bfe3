"""make import: convert another format's file to the canonical JSONL.

    python -m pipeline.commands.importer FORMAT IN OUT"""

from __future__ import annotations

import argparse
import sys

from pipeline.lib.formats import FORMATS, convert


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"make import {summary['format']}", show_header=False)
    table.add_row("input", summary["source"])
    table.add_row("output", summary["output"])
    table.add_row("records read", str(summary["read"]))
    table.add_row("conversations", str(summary["conversations"]))
    table.add_row("written", f"{summary['written']} ({summary['accepted_share']:.1%} of the conversations)")
    table.add_row("skipped", str(summary["skipped"]))
    for code, n in summary["skip_reasons"].items():
        table.add_row(f"  {code}", str(n))
    if summary["rejects_path"]:
        table.add_row("rejects", summary["rejects_path"])
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.importer",
                                     description="Convert tool-calling datasets to tooltune's canonical JSONL.")
    parser.add_argument("format", choices=sorted(FORMATS))
    parser.add_argument("input", help="input file or directory")
    parser.add_argument("output", help="output JSONL (rejects go to OUTPUT.rejects.jsonl)")
    parser.add_argument("--answers", help="BFCL ground-truth file (bfcl only)")
    args = parser.parse_args(argv)
    if args.answers and args.format != "bfcl":
        parser.error("--answers only applies to bfcl")
    try:
        summary = convert(args.format, args.input, args.output, answers_path=args.answers)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
