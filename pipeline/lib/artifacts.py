"""Readers of each stage's outputs under runs/<RUN>/<stage>/: what one stage wrote and a later one (or a command) reads."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.lib.common import StageError, read_jsonl, rel


def load_split(run_dir: Path, split_name: str) -> list[dict]:
    """Read validate/<split>.jsonl with the tool lists attached (for the later stages)."""
    vdir = Path(run_dir) / "validate"
    toolsets = json.loads((vdir / "toolsets.json").read_text())
    out = read_jsonl(vdir / f"{split_name}.jsonl")
    for r in out:
        r["tools"] = toolsets[r["toolset"]]  # one list object per toolset; the key stays for grouping
    return out


def export_info(run_dir: Path) -> dict:
    """What the finished export of a run says of itself (tooltune.json); a StageError naming the fix if there is none."""
    export = run_dir / "export"
    if not (export / "stage.json").is_file():
        raise StageError(f"{rel(export)} holds no finished export: run `make train RUN={run_dir.name}` (or `make export`) first.")
    return json.loads((export / "tooltune.json").read_text())


def gguf_name(run: str, qtype: str) -> str:
    return f"{run}-{qtype}.gguf"


def gguf_files(run_dir: Path, wanted: list[str] | None, key: str) -> dict[str, Path]:
    """The GGUF files of the finished `make gguf`, by type: those `wanted` (named by recipe key `key`), or all."""
    gdir = run_dir / "gguf"
    if not (gdir / "stage.json").is_file():
        raise StageError(f"{rel(gdir)} holds no finished GGUF files: run `make gguf RUN={run_dir.name}` first.")
    files = {q: gdir / f["file"] for q, f in json.loads((gdir / "tooltune.json").read_text())["files"].items()}
    missing = [q for q in wanted or [] if q not in files]
    if missing:
        raise StageError(f"{key} names {missing}, which `make gguf` did not write (it wrote {sorted(files)}): add them "
                         f"to export.gguf, e.g. ARGS=\"export.gguf=[{','.join(sorted(set(files) | set(missing)))}]\".")
    return {q: files[q] for q in (wanted or files)}
