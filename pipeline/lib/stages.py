"""The one list of stages: their order, their modules, what each needs, what `make help` says of each.

Make builds its stage targets from this list (`python3 -m pipeline.lib.stages make`), `make help`
prints its lines, `make status` and the run report walk it, and a sidecar is written only for a
stage it names. A stage's name is its Make target and its folder, runs/<RUN>/<name>/; its module
is pipeline/stages/<module>.py, numbered so that `ls pipeline/stages` shows the order.

Standard library only: Make reads it with the system's python3 before any virtualenv exists.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str                 # make target and run folder
    module: str               # pipeline/stages/<module>.py
    needs: tuple[str, ...]    # stages whose finished outputs it reads
    chain: bool               # part of `make train`
    summary: str              # its line in `make help`

    @property
    def import_name(self) -> str:
        return f"pipeline.stages.{self.module}"


STAGES = (
    Stage("validate", "s1_validate", (), True, "check the data against the tool schemas, split train/eval"),
    Stage("count", "s2_count", ("validate",), True, "exact token budget with the real tokenizer and template"),
    Stage("load", "s3_load", (), True, "resolve backend/model/dtype/4-bit, print the VRAM plan, load once"),
    Stage("sft", "s4_sft", ("count", "load"), True, "LoRA SFT on assistant turns (resumes after an interruption)"),
    Stage("export", "s5_export", ("sft",), True, "merged 16-bit model + adapter, checked against the adapter"),
    Stage("evaluate", "s6_evaluate", ("validate", "export"), True, "base vs tuned tool-calling accuracy on the held-out split"),
    Stage("gguf", "s7_gguf", ("export",), False, "GGUF files (export.gguf) + Ollama Modelfiles from the export, by llama.cpp's own tools"),
    Stage("bfcl", "s8_bfcl", ("export",), False, "base vs tuned on BFCL's single-turn categories, judged by BFCL's own AST checker"),
)
NAMES = tuple(s.name for s in STAGES)
CHAIN = tuple(s.name for s in STAGES if s.chain)  # what `make train` runs, in order


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"{name!r} is not a stage; the stages are {', '.join(NAMES)}")


def help_lines() -> list[str]:
    """`make help`'s lines for the stages, in the format of its other lines."""
    out = []
    for k, s in enumerate(STAGES, 1):
        where = f"stage {k}" if s.chain else "after export"
        out.append(f"  make {s.name:<11} {where}: {s.summary}")
    return out


def make_specs() -> list[str]:
    """One word a stage for the Makefile: name:module:needs (needs joined by '+')."""
    return [f"{s.name}:{s.module}:{'+'.join(s.needs)}" for s in STAGES]


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "help"
    print("\n".join(make_specs() if what == "make" else help_lines()))
