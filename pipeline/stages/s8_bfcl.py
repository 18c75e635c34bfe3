"""The field's benchmark: base vs tuned on the Berkeley Function Calling Leaderboard's single-turn categories.

    make bfcl RUN=my-run                                   # eval.bfcl_per_category questions of each category
    make bfcl RUN=my-run ARGS="eval.bfcl_per_category=null"  # every question (hours on a CPU)

The questions, their possible answers and the AST checker are BFCL's own, from the `bfcl-eval` package on PyPI
(BFCL v4 data). Each question is rendered through the run's chat template with the question's own functions as
`tools` (BFCL's parameter types mapped to JSON Schema), answered greedily by the base and the merged model,
parsed by the run's parser, and judged by BFCL's checker: a call must name an expected function with every
required argument at one of the acceptable values; an irrelevance question is right when no call comes back.

The summary columns are computed as the leaderboard computes them (v3 and v4): non-live AST is the unweighted
mean of simple, multiple, parallel and parallel multiple; live is the mean of the four live categories weighted
by their full sizes; irrelevance is the unweighted mean of irrelevance and live irrelevance. Two differences:
the leaderboard's "simple" also averages in Java and JavaScript questions (here Python only), and a sample of
each category stands for the whole.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.lib.bfcl import ANCHORS, CATEGORIES, items, pct, score
from pipeline.lib.common import console, fingerprint, stage_main, up_to_date, write_json_atomic, write_jsonl_atomic, write_sidecar, write_text_atomic
from pipeline.lib.recipe import Recipe

STAGE = "bfcl"
def answer(recipe: Recipe, run_dir: Path, bitems: list[dict], budget: int) -> tuple[dict[str, list[str]], str]:
    """The base's and the merged model's greedy replies to every question (the evaluate stage's models and decoding),
    and the run's tool-call format."""
    from pipeline.lib.inference import free_gpu_memory, generate, load_model, scored_models
    from pipeline.lib.models import load_tokenizer
    from pipeline.lib.template import Chat

    tok = load_tokenizer(recipe)
    chat = Chat.for_recipe(recipe, tok)
    prompts = [chat.prompt(it["messages"], it["tools"]) for it in bitems]
    replies = {}
    for label, path, name in scored_models(recipe, run_dir):
        model = load_model(path, recipe, name)
        replies[label] = generate(model, tok, chat, prompts, recipe, f"BFCL {label}", budget)
        del model
        free_gpu_memory()
    return replies, chat.fmt


def markdown(recipe: Recipe, report: dict) -> str:
    base, tuned = report["base"], report["tuned"]
    lines = [f"# BFCL: {recipe.name}", "",
             f"Berkeley Function Calling Leaderboard (BFCL v4 data, `bfcl-eval` {report['bfcl_eval']}), single-turn "
             f"categories, {report['per_category'] or 'all'} questions per category; each question rendered with the run's "
             f"template and its own functions as tools, parsed by the `{report['tool_format']}` parser, judged by BFCL's "
             "AST checker; selection counts the expected functions called whatever their arguments. Base and tuned "
             "(the merged export) decode greedily.", "",
             "| category | questions | base | tuned | selection base | selection tuned |", "|---|---|---|---|---|---|"]
    for c in CATEGORIES:
        if c in tuned["categories"]:
            t, b = tuned["categories"][c], base["categories"][c]
            lines.append(f"| {c} | {t['total']} of {t['size']} | {pct(b['accuracy'])} | {pct(t['accuracy'])} | "
                         f"{pct(b.get('selection'))} | {pct(t.get('selection'))} |")
    lines += ["", "| | non-live AST | live | irrelevance |", "|---|---|---|---|"]
    for label, r in (("base", base), ("tuned", tuned)):
        s = r["summary"]
        lines.append(f"| {label} ({recipe.name}) | {pct(s['non_live_ast'])} | {pct(s['live'])} | {pct(s['irrelevance'])} |")
    for name, (a, b, c) in ANCHORS.items():
        lines.append(f"| {name}, leaderboard v3 (2025-04) | {a} | {b} | {c} |")
    lines += ["", "Non-live AST here averages Python questions only (the leaderboard's simple column also averages Java "
              "and JavaScript); a sample of each category stands for it (live is weighted by the full category sizes).", "",
              "## Tuned: wrong answers (first of each category)", ""]
    seen = set()
    for p in report["failures"]:
        if p["category"] not in seen:
            seen.add(p["category"])
            lines.append(f"- `{p['id']}` ({p['category']}): {p['why']}; produced `{p['produced'].strip()[:200]}`")
    return "\n".join(lines) + "\n"


def run(recipe: Recipe, run_dir: Path) -> Path:
    from pipeline.lib.artifacts import export_info

    started = time.time()
    export = run_dir / "export"
    out = run_dir / STAGE
    export_info(run_dir)  # a finished export, or the message that says how to make one
    inputs = [export / "stage.json"]
    fp = fingerprint(recipe, STAGE, inputs, ("model", "tokenizer", "chat_template", "tool_format", "export.base",
                                               "eval.bfcl_per_category", "eval.bfcl_max_new_tokens", "eval.batch_size",
                                               "trust_remote_code"))
    if up_to_date(out, fp):
        console.print(f"[dim]{STAGE}: inputs unchanged, nothing to do[/]")
        return out / "report.json"
    from importlib.metadata import version

    bitems = items(CATEGORIES, recipe.eval.bfcl_per_category)
    console.print(f"bfcl: {len(bitems)} questions from {len(CATEGORIES)} categories, base and tuned, replies up to "
                  f"{recipe.eval.bfcl_max_new_tokens} tokens")
    replies, fmt = answer(recipe, run_dir, bitems, recipe.eval.bfcl_max_new_tokens)
    report = {"bfcl_eval": version("bfcl-eval"), "per_category": recipe.eval.bfcl_per_category, "tool_format": fmt,
              "anchors": ANCHORS}
    preds = []
    for label in ("base", "tuned"):
        report[label], p = score(bitems, replies[label], fmt)
        preds += [dict(model=label, **x) for x in p]
    report["failures"] = [p for p in preds if p["model"] == "tuned" and not p["ok"]]
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(out / "predictions.jsonl", preds)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(recipe, report))
    for label in ("base", "tuned"):
        s = report[label]["summary"]
        console.print(f"bfcl {label}: non-live AST {pct(s['non_live_ast'])}, live {pct(s['live'])}, "
                      f"irrelevance {pct(s['irrelevance'])}")
    write_sidecar(out, STAGE, recipe, inputs, fp, started, {k: report[k]["summary"] for k in ("base", "tuned")})
    return out / "report.md"


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()
