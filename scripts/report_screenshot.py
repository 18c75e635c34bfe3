"""Open a run's report.html in headless Chromium, take a screenshot, and check that the page rendered.

    .venv/bin/python scripts/report_screenshot.py runs/<RUN>/report.html runs/<RUN>/report.png   # make screenshot

Checks, each failing with what it saw:
  - the DOM Chromium built holds the charts (inline SVG with drawn bars and lines, with points) and tables;
  - the screenshot shows them: enough pixels of each chart's own colour (the tuned bars, the loss curve), which
    nothing else on the page uses, so a page that loaded but did not draw its charts fails.
Needs Debian's `chromium` (`make chromium` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--force-device-scale-factor=1"]
MIN_PIXELS = 300  # of each chart colour in the screenshot


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("report_screenshot: no Chromium found: `make chromium` installs Debian's chromium package.")


def run_chromium(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="tooltune-chromium-") as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def colour_pixels(png: Path, colour: str, tolerance: int = 24) -> int:
    from PIL import Image

    want = hex_rgb(colour)
    img = Image.open(png).convert("RGB")
    return sum(n for n, px in img.getcolors(maxcolors=1 << 24) if all(abs(a - b) <= tolerance for a, b in zip(px, want)))


def check(page: Path, shot: Path, width: int = 1280, height: int = 1400) -> dict:
    """Screenshot `page` into `shot` and return what was found; raises AssertionError naming what is missing."""
    from pipeline.lib.charts import COLOURS

    url = page.resolve().as_uri()
    dom = run_chromium(["--dump-dom", url]).stdout
    svgs = re.findall(r"<svg\b[^>]*>.*?</svg>", dom, flags=re.S)
    charts = {c: sum(f"chart {c}" in s[:200] for s in svgs) for c in ("eval-chart", "loss-chart")}
    drawn = {"bars": len(re.findall(r'<rect[^>]*class="bar tuned"', dom)),
             "loss points": max((len(m.split()) for m in re.findall(r'<polyline points="([^"]+)"[^>]*stroke="'
                                                                      + COLOURS["loss"], dom)), default=0),
             "table rows": len(re.findall(r"<tr>", dom))}
    problems = [f"no {c} <svg> in the DOM" for c, n in charts.items() if not n]
    problems += [f"no {k}" for k, n in drawn.items() if not n]
    shot.parent.mkdir(parents=True, exist_ok=True)
    shot.unlink(missing_ok=True)
    r = run_chromium([f"--screenshot={shot}", f"--window-size={width},{height}", url])
    if not shot.is_file():
        raise AssertionError(f"Chromium wrote no screenshot: {r.stderr[-800:]}")
    pixels = {name: colour_pixels(shot, COLOURS[name]) for name in ("tuned", "loss")}
    problems += [f"only {n} pixels of the {name} colour {COLOURS[name]} in the screenshot" for name, n in pixels.items()
                 if n < MIN_PIXELS]
    found = {"charts": charts, "drawn": drawn, "pixels": pixels, "screenshot": str(shot)}
    if problems:
        raise AssertionError(f"{page} did not render: " + "; ".join(problems) + f" ({found})")
    return found


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        found = check(Path(sys.argv[1]), Path(sys.argv[2]))
    except AssertionError as e:
        raise SystemExit(f"report_screenshot: {e}") from None
    print(f"report_screenshot: {sys.argv[2]}: {found['charts']}, {found['drawn']}, chart pixels {found['pixels']}")


if __name__ == "__main__":
    main()
