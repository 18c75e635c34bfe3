"""Stage 3, load: resolve backend, model, dtype and quantization; load once and record it.

    python -m pipeline.stages.s3_load --recipe smollm2-135m-tools

Prints the VRAM/time plan before any weights move, then loads the base with LoRA attached and writes
runs/<RUN>/load/model.json: what was resolved and why, parameter counts, trainable LoRA parameters,
memory after load.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.table import Table

from pipeline.lib.backends import compute_dtype, load_base, memory_now, param_counts, resolve_backend
from pipeline.lib.common import console, fingerprint, stage_main, up_to_date, versions, write_json_atomic, write_sidecar
from pipeline.lib.models import resolve
from pipeline.lib.recipe import Recipe

STAGE = "load"


def run(recipe: Recipe, run_dir: Path) -> Path:
    started = time.time()
    out = run_dir / "load"
    fp = fingerprint(recipe, STAGE, [], ("model", "tokenizer", "backend", "load_in_4bit", "dtype", "lora", "task", "seed",
                                       "trust_remote_code", "max_seq_length", "train.gradient_checkpointing"))
    if up_to_date(out, fp):
        console.print(f"[dim]{STAGE}: recipe unchanged, nothing to do[/]")
        return out / "model.json"

    backend, why = resolve_backend(recipe)
    console.print(f"backend: [bold]{backend}[/] ({why})")
    try:
        from pipeline.lib.planner import show_plan

        plan = show_plan(recipe)
    except ImportError:
        plan = None
    where = resolve(recipe.model, "model")
    t0 = time.time()
    model, _ = load_base(recipe, backend, path=where)
    load_s = time.time() - t0
    counts = param_counts(model)
    info = {
        "backend": backend,
        "why": why,
        "model": recipe.model,
        "resolved_path": where if not where.startswith("/") else "(local) " + Path(where).name,
        "dtype": str(compute_dtype(recipe, backend)).replace("torch.", ""),
        "quantization": "nf4 (double quant)" if recipe.load_in_4bit else "none",
        "lora": {"r": recipe.lora_r, "alpha": recipe.lora_alpha, "rslora": recipe.lora.use_rslora,
                 "target_modules": recipe.lora.target_modules, "dropout": recipe.lora.dropout},
        "parameters": counts,
        "memory_after_load": memory_now(),
        "load_seconds": round(load_s, 2),
        "versions": versions(),
        "plan": plan,
    }
    write_json_atomic(out / "model.json", info)
    t = Table(title="resolved model", show_header=False)
    for k in ("backend", "model", "dtype", "quantization"):
        t.add_row(k, str(info[k]))
    t.add_row("parameters", f"{counts['total']:,}")
    t.add_row("trainable (LoRA)", f"{counts['trainable']:,} ({counts['trainable_share']:.3%})")
    t.add_row("memory after load", ", ".join(f"{k}={v}" for k, v in info["memory_after_load"].items()))
    console.print(t)
    write_sidecar(out, STAGE, recipe, [], fp, started, {"backend": backend, **counts})
    return out / "model.json"


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()
