"""The run report: one page to look at, a Markdown twin with the loss curve as a PNG, and the model card.

    python -m pipeline.commands.report --run smollm2-135m-tools        # make report RUN=...

Every stage rewrites these when it finishes (so they always show what the run has so far), and this command
rebuilds them from the run folder alone:
  runs/<RUN>/report.html   self-contained (inline SVG charts, no script, nothing fetched): the recipe and what it
                           reproduces, the data, the loss and learning-rate curves, time, throughput and memory per
                           stage, and the evaluation against its targets with the failures grouped by kind
  runs/<RUN>/report.md     the same in Markdown, with loss.png beside it
  runs/<RUN>/export/README.md   the model card: a YAML header the model hub reads, the eval table, the recipe, the
                           data, the serving commands and the limitations the eval showed
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from pipeline.lib import bfcl, scoring, stages, windows
from pipeline.lib.common import console, err_console, read_jsonl, rel, write_text_atomic
from pipeline.lib.recipe import scrub
from pipeline.lib.scoring import pct
from pipeline.lib.card import ARTICLE, md_eval_table, model_card, reproduces
from pipeline.lib.charts import COLOURS, CSS, bar_chart, esc, line_chart, loss_png, loss_series, table

# --- reading the run -----------------------------------------------------------------------------------

def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict]:
    return read_jsonl(path, tolerant=True)


def collect(run_dir: Path) -> dict:
    """What the run folder holds, stage by stage; only finished stages (a sidecar) count."""
    d: dict = {"run": run_dir.name, "sidecars": {}}
    for stage in stages.NAMES:
        side = _json(run_dir / stage / "stage.json")
        if side:
            d["sidecars"][stage] = side
    newest = max(d["sidecars"].values(), key=lambda s: s.get("finished", ""), default=None)
    d["recipe"] = newest["recipe"] if newest else None
    done = d["sidecars"]
    for stage, name in (("validate", "report.json"), ("count", "report.json"), ("load", "model.json"),
                        ("sft", "figures.json"), ("export", "tooltune.json"), ("evaluate", "report.json"),
                        ("bfcl", "report.json")):
        if stage in done:
            d[stage] = _json(run_dir / stage / name)
    log = _jsonl(run_dir / "sft" / "log.jsonl")
    by_step: dict[int, dict] = {}
    for e in log:  # one point per step and key: a resumed run logs some steps again, the last word counts
        by_step.setdefault(e.get("step", 0), {}).update(e)
    d["log"] = [by_step[k] for k in sorted(by_step)]
    if "evaluate" in done:
        d["predictions"] = [p for p in _jsonl(run_dir / "evaluate" / "predictions.jsonl") if p.get("model") == "tuned"]
    d["failure_groups"] = failure_groups(d.get("predictions") or [], (d.get("evaluate") or {}).get("tool_format", "hermes"))
    if "gguf" in done:
        d["gguf"] = sorted(p.name for p in (run_dir / "gguf").glob("*.gguf"))
        d["modelfiles"] = sorted(p.name for p in (run_dir / "gguf").glob("*.Modelfile"))
    return d


def why(p: dict, fmt: str) -> str:
    """A wrong turn's kind of mistake: as the eval recorded it, or worked out again from the reply."""
    if p.get("why"):
        return p["why"]
    from pipeline.lib.parse import parse
    from pipeline.lib.scoring import why_wrong

    return why_wrong(parse(p["produced"], fmt), p["expected"] if isinstance(p["expected"], list) else [])


def failure_groups(preds: list[dict], fmt: str = "hermes") -> list[tuple[str, str, int, int]]:
    """(conversation kind, what went wrong, wrong turns, turns of that kind), most frequent first."""
    total = Counter(p["kind"] for p in preds)
    wrong = Counter((p["kind"], why(p, fmt)) for p in preds if not p["ok"])
    return [(k, why, n, total[k]) for (k, why), n in wrong.most_common()]


# --- charts (inline SVG, no script) ---------------------------------------------------------------------

# --- the page --------------------------------------------------------------------------------------------

def stage_rows(d: dict) -> list[list[str]]:
    rows = []
    for stage, side in d["sidecars"].items():
        f = side.get("figures") or {}
        what = ""
        if stage == "sft":
            sft = d.get("sft") or {}
            mem = sft.get("memory") or {}
            what = (f"{sft.get('steps', '?')} steps, {sft.get('real_tokens_per_s', '?')} tokens/s, "
                    + ", ".join(f"{k} {v}" for k, v in mem.items()))
        elif stage == "load":
            ld = d.get("load") or {}
            what = f"{ld.get('backend', '')} {ld.get('dtype', '')} {ld.get('quantization', '')}, " + ", ".join(
                f"{k} {v}" for k, v in (ld.get("memory_after_load") or {}).items())
        elif stage == "export":
            m = f.get("merge_check") or {}
            what = f"merge check {m.get('identical', '?')}/{m.get('prompts', '?')} identical, {f.get('dtype', '')}"
        elif stage == "evaluate":
            t = (d.get("evaluate") or {}).get("timing") or {}
            what = ", ".join(f"{k} {v.get('turns_per_s')} turns/s" for k, v in t.items() if isinstance(v, dict))
        elif stage == "count":
            c = d.get("count") or {}
            what = f"{c.get('tokens_per_epoch', 0):,} tokens per epoch" if c else ""
        elif stage == "validate":
            v = d.get("validate") or {}
            what = f"{v.get('accepted', 0)} accepted, {v.get('rejected', 0)} rejected" if v else ""
        rows.append([esc(stage), f"{side.get('wall_time_s', 0):.1f} s", esc(side.get("finished", "")), esc(what)])
    return rows


def eval_groups(ev: dict) -> list[tuple[str, float | None, float | None, float | None]]:
    keys = [k for k in ("tool_selection", "arguments", "refusal", "schema_valid", "answers_result", "parallel")
            if (ev.get("tuned") or {}).get(k) is not None]
    return [(k.replace("_", " "), (ev.get("base") or {}).get(k), ev["tuned"][k], (ev.get("targets") or {}).get(k))
            for k in keys]


def eval_rows(ev: dict) -> list[list[str]]:
    verdict = {"PASS": '<span class="pass">PASS</span>', "FAIL": '<span class="fail">FAIL</span>', "": ""}
    return [[esc(name), base, tuned, esc(target).replace("&gt;=", "&ge;"), verdict[v]]
            for name, base, tuned, target, v in scoring.eval_rows(ev)]


def build_html(d: dict) -> str:
    r = d["recipe"] or {}
    name = r.get("name", d["run"])
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>tooltune run {esc(d['run'])}</title>"
             f"<style>{CSS}</style></head><body><main>",
             f"<h1>tooltune run <code>{esc(d['run'])}</code></h1>",
             f"<div class=sub>recipe <code>{esc(name)}</code>: {esc(r.get('description', ''))}</div>"]
    rep = reproduces(name)
    if rep:
        parts.append(f"<p><b>Reproduces:</b> {esc(rep)}</p>")
    ev = d.get("evaluate")
    cards = []
    if ev:
        for k in ("tool_selection", "arguments", "refusal"):
            v = ev["tuned"].get(k)
            b = (ev.get("base") or {}).get(k)
            cards.append((pct(v), f"{k.replace('_', ' ')} (base {pct(b)}, target {ev['targets'][k]:.0%})"))
    sft = d.get("sft")
    if sft:
        cards.append((f"{sft.get('final_loss', 0):.3f}", f"final train loss after {sft.get('steps')} steps"))
    total = sum(s.get("wall_time_s", 0) for s in d["sidecars"].values())
    cards.append((f"{total / 60:.1f} min", f"wall time of its {len(d['sidecars'])} stages"))
    parts.append("<div class=cards>" + "".join(f"<div class=card><b>{esc(a)}</b><span>{esc(b)}</span></div>"
                                              for a, b in cards) + "</div>")

    charts = []
    if ev:
        charts.append(bar_chart("Held-out tool calling: base vs tuned (dashed: the article's target)",
                                eval_groups(ev), "eval-chart"))
    train, held = loss_series(d["log"])
    if train:
        series = [("train loss", train, COLOURS["loss"])] + ([("eval loss", held, COLOURS["eval_loss"])] if held else [])
        charts.append(line_chart("Loss on the assistant tokens", series, "optimizer step", "loss-chart"))
    if charts:
        parts.append("<div class=row>" + "".join(f"<div class=panel>{c}</div>" for c in charts) + "</div>")

    if ev:
        parts.append("<h2>Evaluation</h2>")
        parts.append(f"<p>{ev['turns']} assistant turns from {ev['conversations']} held-out conversations, decoded "
                     f"greedily by {esc(ev.get('engine', 'hf'))}; tuned = the merged export. Targets: the article "
                     f"{esc(ARTICLE)}.</p>")
        parts.append(table(["metric", "base", "tuned", "target", ""], eval_rows(ev), {1, 2}))
        t = ev["tuned"]
        parts.append(f"<p class=sub>{t['call_turns']} turns with a reference call ({t['parallel_turns']} parallel), "
                     f"{t['text_turns']} with a text reply to the user, {t.get('result_turns', 0)} answering a tool "
                     "result.</p>")
        f = ev.get("forgetting")
        if f:
            parts.append("<h3>Forgetting check: a BFCL sample</h3>"
                         + table(bfcl.SAMPLE_HEADER, [[esc(x) for x in row] for row in bfcl.sample_rows(f)], {1, 2, 3, 4, 5}))
        groups = d["failure_groups"]
        if groups:
            parts.append("<h3>Failures of the tuned model, by kind</h3>")
            parts.append(table(["conversation kind", "what went wrong", "turns wrong", "of"],
                               [[esc(k), esc(w), str(n), str(tot)] for k, w, n, tot in groups], {2, 3}))
            shown = ev.get("failures") or []
            if shown:
                parts.append("<h3>A few in full</h3>")
                for x in shown[:6]:
                    parts.append(f"<p><code>{esc(x['id'])}</code> turn {x['turn']} ({esc(x['kind'])}"
                                 + (f", {esc(x['why'])}" if x.get("why") else "") + ")</p>"
                                 f"<pre>expected: {esc(json.dumps(x['expected'], ensure_ascii=False))}\n"
                                 f"produced: {esc(x['produced'][:600])}</pre>")
    b = d.get("bfcl")
    if b:
        parts.append("<h2>BFCL (make bfcl)</h2>")
        cats = list(b["tuned"]["categories"])
        rows = [[esc(c), str(b["tuned"]["categories"][c]["total"]), pct(b["base"]["categories"][c]["accuracy"]) if b.get("base") else "-",
                 pct(b["tuned"]["categories"][c]["accuracy"])] for c in cats]
        parts.append(table(["category", "questions", "base", "tuned"], rows, {1, 2, 3}))
        summ = [["tuned (this run)"] + [pct(b["tuned"]["summary"].get(k)) for k in ("non_live_ast", "live", "irrelevance")]]
        if b.get("base"):
            summ.insert(0, ["base"] + [pct(b["base"]["summary"].get(k)) for k in ("non_live_ast", "live", "irrelevance")])
        summ += [[esc(n)] + [f"{x:.1f}%" for x in v] for n, v in (b.get("anchors") or {}).items()]
        parts.append(table(["model", "non-live AST", "live", "irrelevance"], summ, {1, 2, 3}))

    parts.append("<h2>Training</h2>")
    lr = [(e["step"], e["learning_rate"]) for e in d["log"] if isinstance(e.get("learning_rate"), (int, float))]
    tps = []
    prev = None
    for e in d["log"]:
        if isinstance(e.get("real_tokens"), (int, float)) and isinstance(e.get("elapsed_s"), (int, float)) and "loss" in e:
            if prev and e["elapsed_s"] > prev[1]:
                tps.append((e["step"], (e["real_tokens"] - prev[0]) / (e["elapsed_s"] - prev[1])))
            prev = (e["real_tokens"], e["elapsed_s"])
    small = [line_chart("Learning rate", [("lr", lr, COLOURS["lr"])], "optimizer step", "lr-chart", 380, 220),
             line_chart("Throughput (tokens/s between log steps)", [("tokens/s", tps, COLOURS["tuned"])],
                        "optimizer step", "tps-chart", 380, 220)]
    small = [c for c in small if c]
    if small:
        parts.append("<div class=row>" + "".join(f"<div class=panel>{c}</div>" for c in small) + "</div>")
    if sft:
        keys = ("backend", "packing", "steps", "final_loss", "train_loss", "train_seconds", "real_tokens_per_s",
                "conversations_per_s", "padding_share")
        trackers = ", ".join(sft.get("report_to") or []) or "none (log.jsonl)"
        parts.append(table(["figure", "value"], [[esc(k), esc(sft.get(k))] for k in keys if k in sft]
                           + [["memory", esc(sft.get("memory"))], ["trackers", esc(trackers)]], {1}))
    elif not d["log"]:
        parts.append("<p class=sub>Not trained yet.</p>")

    parts.append("<h2>Data</h2>")
    v = d.get("validate")
    if v:
        codes = sorted((v.get("errors_by_code") or {}).items(), key=lambda kv: -kv[1])[:5]
        parts.append(table(["", ""], [["lines read", str(v.get("lines_read"))], ["accepted", str(v.get("accepted"))],
                                      ["rejected", str(v.get("rejected"))], ["train / eval", f"{v.get('train')} / {v.get('eval')}"],
                                      ["held-out set", esc(str(v.get("eval_source", "data.eval")))],
                                      ["valid, not used (data.max_train, data.eval_max)", str(v.get("unused_valid", 0))],
                                      ["top reject codes", esc(", ".join(f"{c} ({n})" for c, n in codes) or "none")]]))
        if v.get("warnings"):
            parts.append("<ul>" + "".join(f"<li>{esc(w)}</li>" for w in v["warnings"]) + "</ul>")
    c = d.get("count")
    if c:
        pe = c.get("per_example") or {}
        parts.append(table(["tokens (the model's own tokenizer and template)", ""],
                           [["per epoch", f"{c.get('tokens_per_epoch', 0):,}"], ["trained (assistant) share", pct(c.get("trained_share"))],
                            ["tool schemas' share", pct(c.get("tool_schema_share"))],
                            ["per conversation p50 / p90 / max", f"{pe.get('p50')} / {pe.get('p90')} / {pe.get('max')}"],
                            *([[f"over max_seq_length={c.get('max_seq_length')}",
                                esc(f"{len(c.get('over_max_seq_length') or [])}: {windows.describe(c['too_long'])}")]]
                              if c.get("too_long") else [])], {1}))
        l4 = c.get("len_div_4") or {}
        if l4:
            parts.append(table(["text", "characters", "tokens", "len/4 estimate", "len/4 error"],
                               [[esc(k), f"{x['chars']:,}", f"{x['tokens']:,}", f"{x['len_div_4']:,}", f"{x['naive_error']:+.1%}"]
                                for k, x in l4.items()], {1, 2, 3, 4}))
    if not v and not c:
        parts.append("<p class=sub>Not validated yet.</p>")

    parts.append("<h2>Stages</h2>")
    parts.append(table(["stage", "wall time", "finished", "figures"], stage_rows(d)))
    if r:
        keys = ("model", "backend", "load_in_4bit", "max_seq_length", "lora", "train", "data")
        parts.append("<h2>Recipe</h2><pre>" + esc(json.dumps({k: r.get(k) for k in keys}, indent=1)) + "</pre>")
    parts.append("</main></body></html>\n")
    return scrub("".join(parts))


# --- Markdown --------------------------------------------------------------------------------------------

def build_markdown(d: dict, has_png: bool) -> str:
    r = d["recipe"] or {}
    lines = [f"# tooltune run `{d['run']}`", "", f"Recipe `{r.get('name', '?')}`: {r.get('description', '')}", "",
             "The same report with charts: `report.html` beside this file.", ""]
    if has_png:
        lines += ["![loss on the assistant tokens per optimizer step](loss.png)", ""]
    ev = d.get("evaluate")
    if ev:
        lines += [f"## Evaluation ({ev['turns']} held-out turns; targets of the article {ARTICLE})", ""]
        lines += md_eval_table(ev) + [""]
        groups = d["failure_groups"]
        if groups:
            lines += ["Failures of the tuned model:", "", "| conversation kind | what went wrong | wrong | of |", "|---|---|---|---|"]
            lines += [f"| {k} | {w} | {n} | {t} |" for k, w, n, t in groups] + [""]
    sft = d.get("sft")
    if sft:
        lines += ["## Training", "", f"{sft.get('steps')} steps, final loss {sft.get('final_loss', 0):.4f}, "
                  f"{sft.get('train_seconds')} s, {sft.get('real_tokens_per_s')} tokens/s, memory {sft.get('memory')}.", ""]
    lines += ["## Stages", "", "| stage | wall time | finished |", "|---|---|---|"]
    lines += [f"| {s} | {side.get('wall_time_s', 0):.1f} s | {side.get('finished', '')} |" for s, side in d["sidecars"].items()]
    return scrub("\n".join(lines) + "\n")


# --- the model card -------------------------------------------------------------------------------------

# --- entry points ----------------------------------------------------------------------------------------

def refresh(run_dir: Path, quiet: bool = False) -> Path | None:
    """Rewrite report.html, report.md (+ loss.png) and the export's model card from what the run holds now."""
    d = collect(run_dir)
    if not d["sidecars"]:
        return None
    has_png = loss_png(d["log"], run_dir / "sft" / "log.jsonl", run_dir / "loss.png")
    write_text_atomic(run_dir / "report.html", build_html(d))
    write_text_atomic(run_dir / "report.md", build_markdown(d, has_png))
    if d.get("export") and (run_dir / "export").is_dir():
        write_text_atomic(run_dir / "export" / "README.md", model_card(d))
    if not quiet:
        console.print(f"[dim]report: {rel(run_dir / 'report.html')}[/]")
    return run_dir / "report.html"


def main(argv=None) -> None:
    import argparse

    from pipeline.lib.recipe import RecipeError, fail, run_dir_for

    ap = argparse.ArgumentParser(prog="python -m pipeline.commands.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="smollm2-135m-tools", help="run folder under runs/")
    ap.add_argument("--recipe", default=None, help="ignored: the run's stages say which recipe made it")
    ap.add_argument("--after-stage", action="store_true",
                    help="Make's refresh after a stage: a failure is a warning (the stage's outputs are complete), exit 0")
    a = ap.parse_args(argv)
    try:
        run_dir = run_dir_for(a.run)
    except RecipeError as e:
        fail(str(e))
    if a.after_stage:
        try:
            refresh(run_dir)
        except Exception as e:  # noqa: BLE001 - the stage's own outputs are complete; the report can be rebuilt
            err_console.print(f"[yellow]report: not refreshed ({type(e).__name__}: {scrub(str(e))}); "
                              f"`make report RUN={run_dir.name}` rebuilds it[/]")
        return
    if not run_dir.is_dir():
        fail(f"runs/{a.run} does not exist: run `make train RUN={a.run}` first.")
    out = refresh(run_dir, quiet=True)
    if out is None:
        fail(f"runs/{a.run} has no finished stage yet: nothing to report.")
    console.print(f"[green]report[/] -> {rel(out)} (and report.md, export/README.md)")


if __name__ == "__main__":
    main()
