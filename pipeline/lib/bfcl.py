"""BFCL's data and checker: the single-turn categories, BFCL's own AST checker, selection, the sample's table."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from pipeline.lib.common import StageError, read_jsonl
from pipeline.lib.parse import parse

NON_LIVE = ("simple_python", "multiple", "parallel", "parallel_multiple")
LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
IRRELEVANCE = ("irrelevance", "live_irrelevance")
CATEGORIES = NON_LIVE + LIVE + IRRELEVANCE
# The leaderboard's figures (BFCL v3, 2025-04): non-live AST / live / irrelevance, in percent.
ANCHORS = {"Qwen2.5-0.5B-Instruct": (62.3, 48.0, 46.2), "Hammer2.1-0.5b (a 0.5B tool fine-tune)": (69.1, 62.9, 73.9),
           "Llama-3.1-8B-Instruct (prompt)": (84.2, 61.1, 48.8), "ToolACE-2-8B (a Llama 3.1 8B tool fine-tune)": (87.6, 80.1, 90.1)}
CHECKER_MODEL = "tooltune"  # the name BFCL's checker is told; its functions keep their dots


def data_dir() -> Path:
    try:
        import bfcl_eval
    except ImportError:
        raise StageError("BFCL's data and checker come from the `bfcl-eval` package: `make venv` installs it "
                         "(pip install --no-deps bfcl-eval==2026.3.23).") from None
    return Path(bfcl_eval.__file__).parent / "data"


def read_lines(path: Path) -> list[dict]:
    return read_jsonl(path)


def category(name: str) -> tuple[list[dict], dict[str, list]]:
    """A category's questions and (id -> ground truth) its possible answers (none for irrelevance)."""
    root = data_dir()
    questions = read_lines(root / f"BFCL_v4_{name}.json")
    answers = root / "possible_answer" / f"BFCL_v4_{name}.json"
    return questions, ({r["id"]: r["ground_truth"] for r in read_lines(answers)} if answers.is_file() else {})


def spread(rows: list, n: int | None) -> list:
    """n rows spread evenly over the list (all of them when n is None or larger)."""
    if n is None or n >= len(rows):
        return rows
    step = len(rows) / n
    return [rows[int(k * step)] for k in range(n)]


def tools_of(question: dict) -> list[dict]:
    """A question's functions as OpenAI `tools`, BFCL's types (dict, float, tuple, any) mapped to JSON Schema."""
    from pipeline.lib.formats import bfcl_types_to_json_schema

    return [{"type": "function", "function": {"name": f["name"], "description": f.get("description", ""),
                                               "parameters": bfcl_types_to_json_schema(f.get("parameters") or {})}}
            for f in question["function"]]


def items(categories: tuple[str, ...], per_category: int | None) -> list[dict]:
    """One item per question: its category, the messages, the tools, BFCL's own question and possible answer."""
    out = []
    for cat in categories:
        questions, answers = category(cat)
        for q in spread(questions, per_category):
            turns = q["question"]
            if len(turns) != 1:
                continue  # single-turn categories only
            out.append({"category": cat, "id": q["id"], "messages": turns[0], "tools": tools_of(q), "question": q,
                        "answer": answers.get(q["id"]), "size": len(questions)})
    return out


def checker():
    """BFCL's AST checker, imported without the model handlers its package imports for other uses: the checker
    only asks them whether a model writes dots in function names as underscores (tooltune's parser does not)."""
    if "bfcl_eval.constants.model_config" not in sys.modules:
        stub = types.ModuleType("bfcl_eval.constants.model_config")
        stub.MODEL_CONFIG_MAPPING = {CHECKER_MODEL: types.SimpleNamespace(underscore_to_dot=False)}
        sys.modules["bfcl_eval.constants.model_config"] = stub
    data_dir()
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    return lambda functions, output, answer, cat: ast_checker(functions, output, answer, Language.PYTHON, cat, CHECKER_MODEL)


def verdict(item: dict, calls: list[dict]) -> tuple[bool, str | None]:
    """BFCL's judgement of the parsed calls: right or wrong, and why wrong."""
    if item["category"] in IRRELEVANCE:
        return (not calls), (None if not calls else "called a function where none fits")
    if not calls:
        return False, "no function call"
    output = [{c["name"]: c["arguments"] if isinstance(c["arguments"], dict) else {}} for c in calls]
    try:
        result = checker()(item["question"]["function"], output, item["answer"], item["category"])
    except Exception as e:  # the checker raises on shapes it does not expect (a list where a dict goes)
        return False, f"checker: {type(e).__name__}: {e}"[:300]
    return bool(result["valid"]), None if result["valid"] else "; ".join(map(str, result.get("error", [])))[:300]


def selected(item: dict, calls: list[dict]) -> bool:
    """Tool selection alone: the calls name exactly the expected functions, as many times each, whatever their
    arguments (an irrelevance question: no call). BFCL's own verdict also checks every argument."""
    if item["category"] in IRRELEVANCE:
        return not calls
    expected = sorted(name for entry in item["answer"] or [] for name in entry)
    return bool(calls) and sorted(c["name"] for c in calls) == expected


def score(bitems: list[dict], outputs: list[str], fmt: str) -> tuple[dict, list[dict]]:
    """Per-category accuracy (and tool selection alone), the leaderboard's summary columns, one record per question."""
    preds, per = [], {}
    for item, text in zip(bitems, outputs):
        p = parse(text, fmt)
        ok, why = verdict(item, p.calls)
        sel = selected(item, p.calls)
        per.setdefault(item["category"], {"right": 0, "selected": 0, "total": 0, "size": item["size"]})
        per[item["category"]]["right"] += ok
        per[item["category"]]["selected"] += sel
        per[item["category"]]["total"] += 1
        preds.append({"category": item["category"], "id": item["id"], "ok": ok, "selected": sel, "why": why,
                      "produced": text, "calls": p.calls})
    acc = {c: v["right"] / v["total"] for c, v in per.items()}
    return {"categories": {c: dict(per[c], accuracy=acc[c], selection=per[c]["selected"] / per[c]["total"]) for c in per},
            "summary": summary(acc, per)}, preds


SAMPLE_HEADER = ["BFCL category", "questions", "selection base", "selection tuned", "AST base", "AST tuned"]


def sample_rows(f: dict) -> list[list[str]]:
    """The evaluate stage's BFCL sample, a row per category: questions, selection and AST accuracy, base and tuned
    ("-" for the selection of a report written before it was recorded)."""
    def p(v):
        return "-" if v is None else f"{v:.1%}"

    rows = []
    for c, v in f["tuned"]["categories"].items():
        b = f.get("base", {}).get("categories", {}).get(c, {})
        rows.append([c, str(v["total"]), p(b.get("selection")), p(v.get("selection")), p(b.get("accuracy")), p(v["accuracy"])])
    return rows


def sample_table(f: dict) -> list[str]:
    """The same as Markdown table lines."""
    return ["| " + " | ".join(SAMPLE_HEADER) + " |", "|---" * len(SAMPLE_HEADER) + "|",
            *("| " + " | ".join(row) + " |" for row in sample_rows(f))]


def summary(acc: dict, per: dict) -> dict:
    """The leaderboard's columns from per-category accuracy (None where a category was not run)."""
    def mean(cats):
        return sum(acc[c] for c in cats) / len(cats) if all(c in acc for c in cats) else None

    live = None
    if all(c in acc for c in LIVE):
        live = sum(acc[c] * per[c]["size"] for c in LIVE) / sum(per[c]["size"] for c in LIVE)
    return {"non_live_ast": mean(NON_LIVE), "live": live, "irrelevance": mean(IRRELEVANCE)}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"
