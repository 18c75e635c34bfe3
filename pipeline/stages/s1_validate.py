"""Stage 1, validate: check every line of the data against the tool schemas; split train/eval.

    python -m pipeline.stages.s1_validate --recipe smollm2-135m-tools [data.train=FILE data.tools=TOOLS ...]
    make validate RECIPE=smollm2-135m-tools ARGS="data.train=FILE"

Reads `data.train` (+ `data.eval`, `data.tools`), writes runs/<RUN>/validate/:
  train.jsonl, eval.jsonl   accepted conversations in one normalized form (arguments as objects)
  toolsets.json             the tool lists they reference, by hash (stored once, not per line)
  rejects.jsonl             every rejected line: file, line, raw text, errors [{code, message, fix}]
  report.json               counts per error code, per tool, per turn type; warnings
Accepted + rejected = lines read, always. With data.on_invalid=fail the stage exits non-zero after
listing every problem.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from pipeline.lib.common import StageError, console, fingerprint, rel, stage_main, up_to_date, write_json_atomic, write_jsonl_atomic, write_sidecar
from pipeline.lib.conversations import (BOM, Schemas, check_line, first_user, load_tools_file, norm_text, problem, raw_field, reject_record,
                                        toolset_key, turn_types)
from pipeline.lib.recipe import Recipe, glob_paths

STAGE = "validate"
MIN_EXAMPLES_PER_TOOL = 50  # the article's advice: fewer than ~50 examples a tool and selection suffers


# --- tools -----------------------------------------------------------------------------------

# --- one line ----------------------------------------------------------------------------------

# --- whole files -------------------------------------------------------------------------------

def read_file(path: Path, dataset_tools, schemas, progress, task) -> tuple[list[dict], list[dict], int]:
    accepted, rejected = [], []
    n = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            progress.advance(task, len(raw))
            raw = raw.rstrip(b"\r\n")
            if lineno == 1:
                raw = raw.removeprefix(BOM)  # editors on Windows start UTF-8 files with one
            if not raw.strip():
                continue  # blank lines are not records
            n += 1
            record, errors = check_line(raw, dataset_tools, schemas)
            where = {"file": str(rel(path)), "line": lineno}
            if record is None:
                rejected.append({**where, **raw_field(raw), "errors": errors})
            else:
                record.setdefault("id", f"{path.stem}:{lineno}")
                record["source"] = where
                accepted.append(record)
    return accepted, rejected, n


def dedupe(records: list[dict], seen: dict) -> tuple[list[dict], list[dict]]:
    keep, dropped = [], []
    for r in records:
        exact = json.dumps(r["messages"], sort_keys=True, ensure_ascii=False)
        normalized = norm_text(exact)
        if exact in seen:
            code, first = "duplicate", seen[exact]
        elif normalized in seen:
            code, first = "duplicate_normalized", seen[normalized]
        else:
            seen[exact] = seen[normalized] = f"{r['source']['file']}:{r['source']['line']}"
            keep.append(r)
            continue
        dropped.append(reject_record(r, problem(code, f"same as {first}")))
    return keep, dropped


def stratum(r: dict) -> str:
    for m in r["messages"]:
        if m.get("tool_calls"):
            return m["tool_calls"][0]["function"]["name"]
    return "(text)"


def split(records: list[dict], fraction: float, cap: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic split stratified by first tool; conversations that share a first user turn stay together."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[norm_text(first_user(r["messages"]))].append(r)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, rs in groups.items():
        strata[stratum(rs[0])].append(key)
    want = min(cap, max(1, round(len(records) * fraction)))
    eval_keys = set()
    for name in sorted(strata):
        keys = sorted(strata[name], key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
        take = max(1, round(len(keys) * want / max(1, len(groups)))) if len(keys) > 1 else 0
        eval_keys.update(keys[:take])
    train = [r for r in records if norm_text(first_user(r["messages"])) not in eval_keys]
    ev = [r for r in records if norm_text(first_user(r["messages"])) in eval_keys][:cap]
    return train, ev


def run(recipe: Recipe, run_dir: Path) -> Path:
    started = time.time()
    out = run_dir / STAGE
    d = recipe.data
    train_files = glob_paths(d.train)
    eval_files = glob_paths(d.eval) if d.eval else []
    tools_files = glob_paths(d.tools) if d.tools else []
    inputs = train_files + eval_files + tools_files
    fp = fingerprint(recipe, STAGE, inputs, ("data",))
    if up_to_date(out, fp):
        console.print(f"[dim]{STAGE}: inputs unchanged, nothing to do[/]")
        return out / "report.json"

    dataset_tools = load_tools_file(tools_files[0]) if tools_files else None

    schemas = Schemas()
    total_bytes = sum(p.stat().st_size for p in train_files + eval_files)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("validating", total=total_bytes)
        train, rejects, read = [], [], 0
        for p in train_files:
            a, r, n = read_file(p, dataset_tools, schemas, progress, task)
            train += a
            rejects += r
            read += n
        given_eval = []
        for p in eval_files:
            a, r, n = read_file(p, dataset_tools, schemas, progress, task)
            given_eval += a
            rejects += r
            read += n

    seen: dict = {}
    if eval_files:
        evals, dropped = dedupe(given_eval, seen)
        rejects += dropped
        evals = evals[: d.eval_max]
        eval_users = {norm_text(first_user(r["messages"])) for r in evals}
        train, dropped = dedupe(train, seen)
        rejects += dropped
        leaked = [r for r in train if norm_text(first_user(r["messages"])) in eval_users]
        train = [r for r in train if norm_text(first_user(r["messages"])) not in eval_users]
        rejects += [reject_record(r, problem("eval_leak", "its first user turn is in the eval split")) for r in leaked]
        extra_eval = len(given_eval) - len(evals) - sum(1 for x in rejects if x["errors"][0]["code"].startswith("dup"))
    else:
        train, dropped = dedupe(train, seen)
        rejects += dropped
        train, evals = split(train, d.eval_fraction, d.eval_max, d.seed)
        extra_eval = 0
    # Coverage is a property of the data, so it is counted before `max_train` takes a subset.
    per_tool: Counter = Counter()
    for r in train:
        per_tool.update({c["function"]["name"] for m in r["messages"] for c in m.get("tool_calls") or []})
    all_train = len(train)
    unused = 0
    if d.max_train is not None and len(train) > d.max_train:
        unused = len(train) - d.max_train
        train = train[: d.max_train]
    # Lines that are valid but not used (beyond max_train / eval_max) are counted, so that
    # accepted + rejected + unused = lines read, always.
    unused += max(0, extra_eval)

    toolsets: dict[str, list] = {}
    def slim(r):
        key = toolset_key(r["tools"])
        toolsets.setdefault(key, r["tools"])
        extra = {"kind": r["kind"]} if "kind" in r else {}
        return {"id": r["id"], "source": r["source"], **extra, "toolset": key, "messages": r["messages"]}

    if not train:
        for name in ("train.jsonl", "eval.jsonl", "toolsets.json", "report.json"):
            (out / name).unlink(missing_ok=True)  # nothing of an earlier run's outputs stands beside these rejects
        write_jsonl_atomic(out / "rejects.jsonl", rejects)
        show_rejects(rejects)
        raise StageError(f"no valid training conversation in {d.train}: {len(rejects)} rejected, each listed above "
                         f"and in {rel(out / 'rejects.jsonl')}.")

    # --- figures ---
    codes = Counter(e["code"] for r in rejects for e in r["errors"])
    turns = Counter(t for r in train + evals for t in turn_types(r["messages"]))
    declared = sorted({t["function"]["name"] for r in train for t in r["tools"]})
    # With data.tools, coverage is about the agent's own tools; tools listed only on some lines (other
    # domains beside them, say) are counted together.
    own = {t["function"]["name"] for t in dataset_tools} if dataset_tools is not None else set(declared)
    others = sorted(set(per_tool) - own)
    warnings = []
    for name in declared:
        if name in own and per_tool[name] < MIN_EXAMPLES_PER_TOOL:
            warnings.append(f"tool {name!r} is called in {per_tool[name]} of the {all_train} valid training "
                            f"conversations; aim for at least {MIN_EXAMPLES_PER_TOOL}.")
    refusals = sum(1 for r in train if r["tools"] and any(
        m["role"] == "assistant" and not m.get("tool_calls") and i == next(
            j for j, x in enumerate(r["messages"]) if x["role"] == "assistant")
        for i, m in enumerate(r["messages"])))
    if declared and refusals == 0:
        warnings.append("no refusal examples (text answers while tools are available): the model will learn to always call.")
    lengths = sorted(len(json.dumps(r["messages"])) for r in train)
    p50 = lengths[len(lengths) // 2]
    outliers = [r["id"] for r in train if len(json.dumps(r["messages"])) > 8 * p50]
    if outliers:
        warnings.append(f"{len(outliers)} conversations are over 8x the median length (e.g. {outliers[:3]}).")

    capped = d.max_train is not None and all_train > d.max_train
    if capped:
        warnings.append(f"data.max_train={d.max_train} (the recipe's cap): training on {len(train)} of the {all_train} valid "
                        f"training conversations, {all_train - len(train)} unused. ARGS=\"data.max_train=null\" trains on all.")
    reusing = [r.get("reused_call_ids", 0) for r in train + evals if r.get("reused_call_ids")]
    if reusing:
        warnings.append(f"{len(reusing)} conversation(s) reuse a tool-call id after its earlier call was answered "
                        f"({sum(reusing)} call(s)): accepted, each result paired with the open call of its id.")

    report = {
        "lines_read": read,
        "accepted": len(train) + len(evals),
        "rejected": len(rejects),
        "unused_valid": unused,
        "balanced": read == len(train) + len(evals) + len(rejects) + unused,
        "train": len(train),
        "eval": len(evals),
        "eval_source": (f"data.eval ({d.eval})" if eval_files else
                        f"split from data.train ({d.train}): {d.eval_fraction:.0%}, at most {d.eval_max}"),
        "errors_by_code": dict(codes.most_common()),
        "calls_per_tool": dict(sorted(per_tool.items())),
        "calls_per_tool_counted_over": all_train,
        "own_tools": sorted(own),
        "other_tools_called": {"tools": len(others), "calls": sum(per_tool[n] for n in others)},
        "turn_types": dict(turns.most_common()),
        "refusal_examples": refusals,
        "warnings": warnings,
        "reused_call_ids": {"conversations": len(reusing), "calls": sum(reusing)},
        "tools_source": "data.tools" if dataset_tools is not None else "per line / signatures",
    }
    for split_name, rs in (("train", train), ("eval", evals)):
        kinds = Counter(r["kind"] for r in rs if r.get("kind"))
        if kinds:
            report[f"kinds_{split_name}"] = {k: {"n": v, "share": round(v / len(rs), 3)} for k, v in kinds.most_common()}

    write_jsonl_atomic(out / "train.jsonl", [slim(r) for r in train])
    write_jsonl_atomic(out / "eval.jsonl", [slim(r) for r in evals])
    write_json_atomic(out / "toolsets.json", toolsets)
    write_jsonl_atomic(out / "rejects.jsonl", rejects)
    write_json_atomic(out / "report.json", report)
    show(report, rejects)
    if rejects and d.on_invalid == "fail":  # before the sidecar: a failed validation is never taken as done
        raise StageError(f"{len(rejects)} invalid line(s) (data.on_invalid=fail); every one is listed above and in "
                         f"{rel(out / 'rejects.jsonl')}. Fix them, or set data.on_invalid=reject to train on the rest.")
    write_sidecar(out, STAGE, recipe, inputs, fp, started, {k: report[k] for k in ("lines_read", "accepted", "rejected")})
    return out / "report.json"


def show(report: dict, rejects: list[dict]) -> None:
    t = Table(title="validate", show_header=False)
    for k in ("lines_read", "train", "eval", "rejected", "unused_valid", "eval_source", "refusal_examples"):
        t.add_row(k, str(report[k]))
    console.print(t)
    if report["calls_per_tool"]:
        t = Table(title=f"training conversations per tool (of {report['calls_per_tool_counted_over']} valid)")
        t.add_column("tool")
        t.add_column("conversations", justify="right")
        own = set(report["own_tools"])
        for k, v in report["calls_per_tool"].items():
            if k in own:
                t.add_row(k, str(v))
        console.print(t)
        other = report["other_tools_called"]
        if other["tools"]:
            console.print(f"and {other['tools']} tools outside data.tools, listed on some lines only, called in "
                          f"{other['calls']} conversations in all")
    show_rejects(rejects)
    for w in report["warnings"]:
        console.print(f"[yellow]warning:[/] {w}")


def show_rejects(rejects: list[dict]) -> None:
    if rejects:
        # One line per problem, compiler style (file:line: code: message (fix)), so editors and grep find them.
        console.print(f"[bold]rejected lines ({len(rejects)}):[/]")
        shown = 0
        for r in rejects:
            for e in r["errors"]:
                if shown < 500:
                    console.print(f"{escape(r['file'])}:{r['line']}: [red]{e['code']}[/]: {escape(e['message'])} ({e['fix']})",
                                  soft_wrap=True, markup=True, highlight=False)
                shown += 1
        if shown > 500:
            console.print(f"... and {shown - 500} more problems in rejects.jsonl")


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()


# --- the bundled data, normalized (the benchmarks and tests read it through these) --------------

