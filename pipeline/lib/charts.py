"""Pictures for the run report: inline SVG line and bar charts (no script, nothing fetched), the loss curve as a PNG."""

from __future__ import annotations

import html
from pathlib import Path

from pipeline.lib.common import write_bytes_atomic

# Colours the screenshot check looks for: each is used by one kind of chart mark and nothing else on the page.
COLOURS = {"loss": "#e8710a", "eval_loss": "#7b1fa2", "lr": "#188038", "tuned": "#1a73e8", "base": "#9aa0a6",
           "target": "#d93025"}


def esc(x) -> str:
    return html.escape(str(x), quote=True)


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
