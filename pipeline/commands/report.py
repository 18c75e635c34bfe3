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

import html
import json
import re
from collections import Counter
from pathlib import Path

from pipeline.lib import bfcl, scoring, stages
from pipeline.lib.common import console, err_console, read_jsonl, rel, write_bytes_atomic, write_text_atomic
from pipeline.lib.recipe import ROOT, scrub
from pipeline.lib.scoring import METRIC_NAMES, pct

ARTICLE = '"Fine-Tune a 7B Model for $1,500 (Not $50,000)"'
# Colours the screenshot check looks for: each is used by one kind of chart mark and nothing else on the page.
COLOURS = {"loss": "#e8710a", "eval_loss": "#7b1fa2", "lr": "#188038", "tuned": "#1a73e8", "base": "#9aa0a6",
           "target": "#d93025"}
# The hub's id and licence of the base models the recipes use (the model card's `base_model` and `license`).
BUILTIN_HUB = {"builtin:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
LICENSES = (("smollm2", "apache-2.0"), ("llama-3.1", "llama3.1"), ("llama-3-", "llama3"), ("llama-2", "llama2"),
            ("qwen2.5-7b", "apache-2.0"), ("qwen2.5-3b", "other"), ("mistral-7b", "apache-2.0"), ("phi-3.5", "mit"))


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


def reproduces(recipe_name: str) -> str:
    """The recipe file's own "Reproduces:" paragraph (its header comment), as one line."""
    path = ROOT / "recipes" / f"{recipe_name}.yaml"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    out, inside = [], False
    for line in lines:
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("Reproduces:"):
            inside, text = True, text[len("Reproduces:"):].strip()
        elif inside and (not text or re.match(r"^[A-Z][a-z]+( [a-z]+)?:", text)):
            break
        if inside:
            out.append(text)
    text = " ".join(out)
    return text + (f" (The article: {ARTICLE}.)" if "the article" in text else "")


def base_model_id(recipe: dict) -> str | None:
    """The hub id of the 16-bit model the adapter was merged into, or None for a local folder."""
    from pipeline.lib.models import sixteen_bit_id

    name = (recipe.get("export") or {}).get("base") or sixteen_bit_id(recipe["model"])
    name = BUILTIN_HUB.get(name, name)
    if name.startswith(("/", ".", "~")) or name.count("/") != 1 or Path(name).exists():
        return None
    return name


def license_of(model: str | None) -> str:
    low = (model or "").lower()
    return next((lic for key, lic in LICENSES if key in low), "other")


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


def esc(x) -> str:
    return html.escape(str(x), quote=True)


# --- charts (inline SVG, no script) ---------------------------------------------------------------------

def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** int(f"{raw:e}".split("e")[1])
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = int(lo / step) * step
    out, v = [], first
    while v <= hi + 1e-12:
        if v >= lo - 1e-12:
            out.append(round(v, 12))
        v += step
    return out


def _num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.0e}" if abs(v) < 0.01 else f"{v:,.0f}"
    return f"{v:g}"


def line_chart(title: str, series: list[tuple[str, list[tuple[float, float]], str]], x_label: str,
               cls: str, width: int = 560, height: int = 260) -> str:
    """A line chart of (label, [(x, y)], colour) series, with axes, ticks and a legend."""
    pts = [p for _, s, _ in series for p in s]
    if not pts:
        return ""
    left, right, top, bottom = 58, 16, 30, 42
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 if max(ys) > 0 else 1.0
    w, h = width - left - right, height - top - bottom

    def X(x):
        return left + (x - x0) / (x1 - x0) * w

    def Y(y):
        return top + h - (y - y0) / (y1 - y0) * h

    out = [f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
           f'<text x="{left}" y="18" class="title">{esc(title)}</text>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" class="tick" text-anchor="end">{_num(t)}</text>')
    for t in _ticks(x0, x1, 6):
        out.append(f'<text x="{X(t):.1f}" y="{top + h + 16}" class="tick" text-anchor="middle">{_num(t)}</text>')
    out.append(f'<line x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}" class="axis"/>'
               f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + h}" class="axis"/>'
               f'<text x="{left + w / 2:.0f}" y="{height - 6}" class="tick" text-anchor="middle">{esc(x_label)}</text>')
    lx = left + w
    for label, s, colour in reversed(series):
        if not s:
            continue
        line = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in s)
        out.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2.5" class="series"/>')
        if len(s) == 1:
            out.append(f'<circle cx="{X(s[0][0]):.1f}" cy="{Y(s[0][1]):.1f}" r="4" fill="{colour}"/>')
        lx -= 8 + 7 * len(label)
        out.append(f'<rect x="{lx}" y="8" width="12" height="4" fill="{colour}"/>'
                   f'<text x="{lx + 16}" y="14" class="tick">{esc(label)}</text>')
        lx -= 18
    out.append("</svg>")
    return "".join(out)


def bar_chart(title: str, groups: list[tuple[str, float | None, float | None, float | None]], cls: str,
              width: int = 560, height: int = 260) -> str:
    """Grouped bars (label, base, tuned, target) on a 0-100% scale, a target tick over each group that has one."""
    if not groups:
        return ""
    left, right, top, bottom = 44, 12, 48, 30
    w, h = width - left - right, height - top - bottom
    gw = w / len(groups)
    bw = min(34.0, gw / 3)

    def Y(v):
        return top + h - v * h

    out = [f'<svg class="chart {cls}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">',
           f'<text x="{left}" y="18" class="title">{esc(title)}</text>']
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" class="tick" text-anchor="end">{t:.0%}</text>')
    for i, (label, base, tuned, target) in enumerate(groups):
        cx = left + gw * i + gw / 2
        for j, (v, colour, name) in enumerate(((base, COLOURS["base"], "base"), (tuned, COLOURS["tuned"], "tuned"))):
            if v is None:
                continue
            x = cx - bw + j * bw
            out.append(f'<rect x="{x + 2:.1f}" y="{Y(v):.1f}" width="{bw - 4:.1f}" height="{max(v * h, 0.5):.1f}" '
                       f'fill="{colour}" class="bar {name}"><title>{esc(label)} {name}: {v:.1%}</title></rect>'
                       f'<text x="{x + bw / 2:.1f}" y="{Y(v) - 3:.1f}" class="val" text-anchor="middle">{v:.0%}</text>')
        if target is not None:
            out.append(f'<line x1="{cx - bw - 4:.1f}" x2="{cx + bw + 4:.1f}" y1="{Y(target):.1f}" y2="{Y(target):.1f}" '
                       f'stroke="{COLOURS["target"]}" stroke-width="2" stroke-dasharray="5,3" class="target"/>')
        out.append(f'<text x="{cx:.1f}" y="{top + h + 16}" class="tick" text-anchor="middle">{esc(label)}</text>')
    lx = left
    for name, colour in (("base", COLOURS["base"]), ("tuned", COLOURS["tuned"]), ("target", COLOURS["target"])):
        out.append(f'<rect x="{lx}" y="27" width="12" height="8" fill="{colour}"/>'
                   f'<text x="{lx + 16}" y="35" class="tick">{name}</text>')
        lx += 70
    out.append("</svg>")
    return "".join(out)


def loss_series(log: list[dict]) -> tuple[list, list]:
    train = [(e["step"], e["loss"]) for e in log if isinstance(e.get("loss"), (int, float))]
    held = [(e["step"], e["eval_loss"]) for e in log if isinstance(e.get("eval_loss"), (int, float))]
    return train, held


def loss_png(log: list[dict], log_path: Path, path: Path) -> bool:
    """The loss curve as a PNG (matplotlib, no display), for the Markdown report. False when there is no loss yet."""
    train, held = loss_series(log)
    if not train:
        return False
    if path.is_file() and log_path.is_file() and path.stat().st_mtime >= log_path.stat().st_mtime:
        return True  # drawn from this very log already
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    ax.plot(*zip(*train), color=COLOURS["loss"], lw=2, label="train loss")
    if held:
        ax.plot(*zip(*held), color=COLOURS["eval_loss"], lw=2, label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return True


# --- the page --------------------------------------------------------------------------------------------

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#202124;margin:0;background:#f8f9fa}
main{max-width:1180px;margin:0 auto;padding:20px 24px 40px}
h1{font-size:24px;margin:4px 0}h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #dadce0;padding-bottom:4px}
.sub{color:#5f6368}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #dadce0;border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px}.card span{color:#5f6368;font-size:12px}
.row{display:flex;flex-wrap:wrap;gap:16px}.panel{background:#fff;border:1px solid #dadce0;border-radius:8px;padding:8px}
table{border-collapse:collapse;background:#fff;margin:6px 0}td,th{border:1px solid #dadce0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#137333;font-weight:600}.fail{color:#a50e0e;font-weight:600}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;background:#fff;border:1px solid #dadce0;padding:8px;border-radius:6px;margin:4px 0}
svg .title{font-size:13px;font-weight:600;fill:#202124}svg .tick{font-size:11px;fill:#5f6368}svg .val{font-size:10px;fill:#3c4043}
svg .grid{stroke:#e8eaed}svg .axis{stroke:#80868b}
"""


def table(head: list[str], rows: list[list], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(r)) + "</tr>")
    return "".join(out) + "</table>"


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
                                      ["top reject codes", esc(", ".join(f"{c} ({n})" for c, n in codes) or "none")]]))
    c = d.get("count")
    if c:
        pe = c.get("per_example") or {}
        parts.append(table(["tokens (the model's own tokenizer and template)", ""],
                           [["per epoch", f"{c.get('tokens_per_epoch', 0):,}"], ["trained (assistant) share", pct(c.get("trained_share"))],
                            ["tool schemas' share", pct(c.get("tool_schema_share"))],
                            ["per conversation p50 / p90 / max", f"{pe.get('p50')} / {pe.get('p90')} / {pe.get('max')}"]], {1}))
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

def md_eval_table(ev: dict) -> list[str]:
    return scoring.markdown_table(scoring.EVAL_HEADER, scoring.eval_rows(ev))


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

def card_header(d: dict) -> str:
    import yaml

    r = d["recipe"] or {}
    base = base_model_id(r)
    tags = ["tooltune", "tool-calling", "function-calling", "lora", "sft", "trl"]
    if (d.get("load") or {}).get("backend") == "unsloth":
        tags.append("unsloth")
    if r.get("load_in_4bit"):
        tags.append("qlora")
    meta: dict = {}
    if base:
        meta["base_model"] = base
    meta.update({"license": license_of(base or r.get("model")), "library_name": "transformers",
                 "pipeline_tag": "text-generation", "tags": tags})
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def model_card(d: dict) -> str:
    """The export's README.md from what the run holds now: before the eval it says how to add the eval table."""
    from pipeline.lib.models import base_16bit_of

    r = d["recipe"] or {}
    info = d.get("export") or {}
    ev = d.get("evaluate")
    lora, train = r.get("lora") or {}, r.get("train") or {}
    check = info.get("merge_check") or {}
    parser = info.get("vllm_tool_parser", "hermes")
    targets = ", ".join(lora.get("target_modules") or []) + (f" (top {lora['top_layers']} blocks)" if lora.get("top_layers") else "")
    lines = [card_header(d), f"# {r.get('name', d['run'])} (merged 16-bit)", "",
             f"A tool-calling fine-tune made with tooltune's recipe `{r.get('name')}`: {r.get('description', '')}", ""]
    rep = reproduces(r.get("name", ""))
    if rep:
        lines += [f"Reproduces: {rep}", ""]
    lines += ["## Evaluation", ""]
    if ev:
        lines += [f"{ev['turns']} assistant turns from {ev['conversations']} held-out conversations of the training data's "
                  f"own tools, base vs this model, decoded greedily (engine: {ev.get('engine', 'hf')}). The targets are those "
                  f"of the article {ARTICLE}.", ""]
        lines += md_eval_table(ev) + [""]
        f = ev.get("forgetting")
        if f:
            lines += ["A fixed sample of the Berkeley Function Calling Leaderboard (other domains' functions): tool selection "
                      "(the expected functions called, or none for irrelevance) and BFCL's AST checker (arguments too):", "",
                      *bfcl.sample_table(f)]
            lines.append("")
    else:
        lines += ["Not evaluated yet: `make evaluate` adds the table here.", ""]
    b = d.get("bfcl")
    if b:
        lines += ["BFCL single-turn categories (`make bfcl`):", "", "| model | non-live AST | live | irrelevance |", "|---|---|---|---|"]
        for who in ("base", "tuned"):
            if b.get(who):
                lines.append(f"| {who} | " + " | ".join(pct(b[who]["summary"].get(k)) for k in ("non_live_ast", "live", "irrelevance")) + " |")
        lines.append("")
    lines += ["## Limitations seen in the evaluation", ""]
    lines += limitations(d) or ["- None recorded yet (no evaluation)."]
    lines += ["", "## Serve", "",
              "vLLM's OpenAI-compatible server, with the parser this model's calls are written for:", "", "```",
              f"vllm serve <this folder> --enable-auto-tool-choice --tool-call-parser {parser} "
              "--chat-template <this folder>/chat_template.jinja", "```", ""]
    if d.get("gguf"):
        q = next((g for g in d["gguf"] if "q4_k_m" in g), d["gguf"][0])
        lines += ["llama.cpp and Ollama, with the GGUF files made from this folder (`make gguf`): "
                  + ", ".join(f"`{g}`" for g in d["gguf"]), "", "```",
                  f"llama-server -m runs/{d['run']}/gguf/{q} --jinja --port 8000",
                  *(f"ollama create {d['run']} -f runs/{d['run']}/gguf/{m}" for m in d.get("modelfiles", [])
                    if m.startswith(q.removesuffix(".gguf"))), "```", ""]
    else:
        lines += ["llama.cpp and Ollama: `make gguf` writes GGUF files and Ollama Modelfiles from this folder.", ""]
    if info.get("decoding"):
        lines += [f"Decoding: {info['decoding']}", ""]
    lines += ["## Recipe", "",
              f"- Base model: `{r.get('model')}` (merged into 16-bit `{base_16bit_of(r)}`)",
              f"- LoRA: r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
              f"rsLoRA={lora.get('use_rslora')}, targets {targets}",
              f"- Training: {train.get('epochs')} epoch(s), max steps {train.get('max_steps')}, batch {train.get('batch_size')} "
              f"x {train.get('grad_accum')}, lr {train.get('lr')} {train.get('scheduler')}, max_seq_length {r.get('max_seq_length')}, "
              f"4-bit base {r.get('load_in_4bit')}",
              f"- Chat template: `chat_template.jinja` (exactly the one used in training); tool-call format "
              f"`{info.get('tool_format', '?')}`"]
    if check:
        lines.append(f"- Merge check: {check.get('identical')}/{check.get('prompts')} greedy generations identical to the "
                     f"adapter model ({len(check.get('near_ties', []))} parted at a near-tie, "
                     f"{len(check.get('mismatches', []))} mismatches)")
    sft = d.get("sft")
    if sft:
        lines.append(f"- Trained: {sft.get('steps')} steps on {sft.get('backend')}, final loss {sft.get('final_loss', 0):.4f}, "
                     f"{sft.get('train_seconds')} s")
    lines += ["", "## Training data", ""]
    v = d.get("validate")
    if v:
        lines.append(f"- {v.get('accepted')} conversations accepted, {v.get('rejected')} rejected; {v.get('train')} trained on, "
                     f"{v.get('eval')} held out")
    c = d.get("count")
    if c:
        lines.append(f"- {c.get('tokens_per_epoch', 0):,} tokens per epoch ({pct(c.get('trained_share'))} of them assistant "
                     "tokens, the only ones trained)")
    for k, h in ((d["sidecars"].get("validate") or {}).get("inputs") or {}).items():
        lines.append(f"- `{Path(k).name}`: sha256 `{h}`")
    return scrub("\n".join(lines) + "\n")


def limitations(d: dict) -> list[str]:
    ev = d.get("evaluate")
    if not ev:
        return []
    out = []
    for k, target in ev["targets"].items():
        v = ev["tuned"].get(k)
        if v is not None and v < target:
            out.append(f"- {METRIC_NAMES[k]} {pct(v)} is below the target {target:.0%}.")
    for k, what, n, tot in d["failure_groups"][:5]:
        out.append(f"- {k} turns: {n} of {tot} wrong: {what}.")
    f = ev.get("forgetting")
    if f and f.get("base"):
        for c, v in f["tuned"]["categories"].items():
            base = f["base"]["categories"].get(c, {})
            for key, what in (("selection", "tool selection"), ("accuracy", "AST accuracy")):
                if base.get(key) is not None and v.get(key) is not None and v[key] < base[key]:
                    out.append(f"- BFCL {c} {what}: {pct(v[key])}, below the base's {pct(base[key])}: it forgot some of "
                               "what the base did on other domains' tools.")
    if ev["tuned"].get("parse_failures"):
        out.append(f"- {pct(ev['tuned']['parse_failures'])} of replies held a call that could not be parsed.")
    return out


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
