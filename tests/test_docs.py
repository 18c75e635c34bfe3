"""The README is a manual: short, opening with the two commands, every figure in it measured (it stands in
docs/results.md beside its commit), every pointer to a section or a file leading somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
RESULTS = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
# What reads as a measured figure: a percentage, a duration, a test count, a speed or a size.
FIGURE = re.compile(r"\b\d[\d,.]*\s?(?:%|min \d+ s|min|s\b|passed|skipped|tokens/s|GiB|GB|MB)")
ARTICLE = ("8-10 GB", "90%", "85%", "95%")  # the article's own table and targets, quoted by its title


def test_readme_is_a_manual_that_opens_with_the_two_commands():
    assert len(README) < 10_000, len(README)
    first_block = README.split("```")[1]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make train", "make test"]


def test_every_figure_in_the_readme_was_measured_on_a_commit():
    rows = [line for line in RESULTS.splitlines() if re.match(r"\| \d{4}-\d{2}-\d{2} \| [0-9a-f]{7,} \|", line)]
    measured = "\n".join(rows)
    unmeasured = []
    for m in FIGURE.finditer(README):
        text = m.group(0)
        if text in ARTICLE or any(text in a for a in ARTICLE) or README[max(0, m.start() - 5):m.start()] == "A100 ":
            continue  # the article's figures, or a GPU's name (A100 80 GB)
        if text not in measured:
            unmeasured.append(text)
    assert unmeasured == []
    for commit in re.findall(r"commit ([0-9a-f]{7,})", README):
        assert any(f"| {commit} |" in r for r in rows), commit


def test_pointers_lead_somewhere():
    headings = {h.strip() for h in re.findall(r"^#+ (.+)$", README, re.M)}
    for path in [ROOT / "README.md", *(ROOT / "recipes").glob("*.yaml"), *(ROOT / "docs").glob("*.md")]:
        text = path.read_text(encoding="utf-8")
        for section in re.findall(r'README "([^"]+)"', text):
            assert section in headings, f"{path.name} points at README section {section!r}"
        for doc in re.findall(r"(?<![/\w])(docs/[\w.-]+\.(?:md|png))", text):
            assert (ROOT / doc).is_file(), f"{path.name} points at {doc}"
    for link in re.findall(r"\]\(((?!http)[^)#]+)\)", README):
        assert (ROOT / link).exists(), link
