"""Scoring a tool-calling reply against its reference: the eval's turns, the verdicts, why a turn is wrong."""

from __future__ import annotations

import json
import math
from collections import Counter

from pipeline.lib import windows
from pipeline.lib.conversations import Schemas
from pipeline.lib.parse import Parsed, calls_match, parse
from pipeline.lib.template import Chat, adapt

# The targets of the article "Fine-Tune a 7B Model for $1,500 (Not $50,000)" for a tool-calling fine-tune.
TARGETS = {"tool_selection": 0.90, "arguments": 0.85, "refusal": 0.95}
SLACK = 8  # tokens a reply may run past the longest reference reply (eval.max_new_tokens=0)
_SCHEMAS = Schemas()  # compiled once per distinct schema, as the validator does
METRICS = ("tool_selection", "arguments", "schema_valid", "refusal", "answers_result", "parallel", "parse_failures")


def eval_items(records: list[dict], fmt: str, max_turns: int | None) -> list[dict]:
    """One item per assistant turn (as the template sees it): the prompt messages and the reference.

    With `max_turns`, whole conversations spread over the file (a golden-ratio sequence, so any prefix of it is
    spread too) until that many turns: every turn of a conversation repeats the turns before it in its prompt, so
    whole conversations cost the eval's generation little more than their longest turn (generation.TriePrefill).
    The last conversation taken keeps its first turns only."""
    groups = [conversation_items(r, fmt) for r in records]
    if max_turns is None or sum(map(len, groups)) <= max_turns:
        return [it for g in groups for it in g]
    take: dict[int, int] = {}
    left = max_turns
    for c in sorted(range(len(groups)), key=lambda i: (i * 0.6180339887498949) % 1.0):
        if left <= 0:
            break
        if groups[c]:
            take[c] = min(left, len(groups[c]))
            left -= take[c]
    return [it for c in sorted(take) for it in groups[c][:take[c]]]


def conversation_items(r: dict, fmt: str) -> list[dict]:
    """The scored items of one conversation, in turn order."""
    items = []
    msgs = adapt(r["messages"], fmt)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        calls = [{"name": c["function"]["name"], "arguments": c["function"]["arguments"] if isinstance(
            c["function"]["arguments"], dict) else json.loads(c["function"]["arguments"]),
                  **({"acceptable": c["acceptable"]} if c.get("acceptable") else {})}
            for c in m.get("tool_calls") or []]
        items.append({"id": r["id"], "turn": i, "kind": r.get("kind"), "messages": msgs[:i], "tools": r["tools"],
                      "after": "tool" if i and msgs[i - 1]["role"] == "tool" else "user",
                      "reference": {"calls": calls, "text": m.get("content") or "", "message": m}})
    return items


def fit_windows(chat: Chat, items: list[dict], max_len: int) -> dict:
    """Give each turn whose prompt and reference reply are longer than `max_len` tokens the window training
    gives the first turn it trains (pipeline.lib.windows): the system prompt and tools, then the most recent
    history that fits. Returns how many turns were windowed, and how many fit in no window (scored whole)."""
    fulls = [it["messages"] + [it["reference"]["message"]] for it in items]
    texts = [chat.render_adapted(m, it["tools"]) for m, it in zip(fulls, items)]
    lengths = [len(x) for x in chat.tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    out = {"windowed": 0, "no_window": 0}
    for it, msgs, n in zip(items, fulls, lengths):
        if n <= max_len:
            continue

        def length(ms: list[dict], tools=it["tools"]) -> int:
            return len(chat.tokenizer(chat.render_adapted(ms, tools), add_special_tokens=False)["input_ids"])

        end = len(msgs) - 1
        try:
            start = windows.fit_start(msgs, end, length, max_len)
        except windows.NoFit:
            out["no_window"] += 1
            continue
        head = windows.head_len(msgs)
        it["messages"] = msgs[:head] + msgs[start:end]
        it["window_start"] = start
        out["windowed"] += 1
    return out


def reference_tokens(chat: Chat, item: dict) -> int:
    """Tokens of the reference reply as the template writes it after the prompt, end of turn included."""
    prompt = chat.render_adapted(item["messages"], item["tools"], add_generation_prompt=True)
    full = chat.render_adapted(item["messages"] + [item["reference"]["message"]], item["tools"])
    if not full.startswith(prompt):  # a template that rewrites earlier turns: count the reply's own text
        return len(chat.tokenizer(item["reference"]["text"] or json.dumps(item["reference"]["calls"]),
                                  add_special_tokens=False)["input_ids"]) + 1
    return len(chat.tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"])


def reply_budget(chat: Chat, items: list[dict], configured: int) -> tuple[int, dict]:
    """max_new_tokens for these turns, and what it was based on: the configured number, or (0) the
    longest reference reply plus SLACK tokens (a right reply may be written a little differently, a
    number as 256.250). Every token over that costs a decode step for the whole batch whenever one
    reply runs on, as the base model's do. A fixed number below some reference replies is kept, and
    those turns are counted: they cannot be scored right."""
    lengths = [reference_tokens(chat, it) for it in items]
    longest = max(lengths, default=0)
    budget = configured if configured > 0 else longest + SLACK
    cut = sum(1 for n in lengths if n > budget)
    return budget, {"max_new_tokens": budget, "configured": configured, "longest_reference": longest,
                    "references_longer_than_budget": cut}


def why_wrong(p: Parsed, ref: list[dict]) -> str:
    """What kind of mistake a wrong turn is, in a few words (the report groups failures by it)."""
    if p.error:
        return "unparseable call"
    if not ref:
        return "called a tool"
    if not p.calls:
        return "no call"
    names, wanted = Counter(c["name"] for c in p.calls), Counter(c["name"] for c in ref)
    if names == wanted:
        return "wrong arguments"
    if set(names) == set(wanted):
        return "wrong number of calls"
    return "wrong tool"


def score(items: list[dict], outputs: list[str], fmt: str, parsed: list[Parsed] | None = None) -> tuple[dict, list[dict], list[dict]]:
    """Metrics, failures, and one prediction record per turn. `parsed`: the calls as a server parsed them (else
    tooltune's parser, which follows vLLM's, reads `outputs`)."""
    n_call = n_text = n_par = n_res = 0
    sel = args_ok = refus = answered = par = fails = 0
    pred_calls = valid_calls = 0
    preds = []
    for k, (item, text) in enumerate(zip(items, outputs)):
        p = parsed[k] if parsed is not None else parse(text, fmt)
        ref = item["reference"]["calls"]
        schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in item["tools"]}
        if p.error:
            fails += 1
        for c in p.calls:
            pred_calls += 1
            if c["name"] in schemas and not any(_SCHEMAS.validator(schemas[c["name"]]).iter_errors(c["arguments"])):
                valid_calls += 1
        ok = True
        if ref:
            n_call += 1
            names_ok = Counter(c["name"] for c in p.calls) == Counter(c["name"] for c in ref)
            exact = calls_match(p.calls, ref)  # equal arguments, or one of a reference's acceptable forms
            sel += names_ok
            args_ok += exact
            if len(ref) > 1:
                n_par += 1
                par += exact
            ok = exact
        else:
            no_call = not p.calls and not p.error
            if item["after"] == "tool":
                n_res += 1
                answered += no_call
            else:
                n_text += 1
                refus += no_call
            ok = no_call
        preds.append({"id": item["id"], "turn": item["turn"], "kind": item["kind"], "after": item["after"],
                      "expected": ref or item["reference"]["text"], "produced": text, "ok": bool(ok),
                      "parse_error": p.error, "why": None if ok else why_wrong(p, ref)})
    failures = [dict(x, produced=x["produced"].strip()) for x in preds if not x["ok"]]
    m = {
        "tool_selection": sel / n_call if n_call else None,
        "arguments": args_ok / n_call if n_call else None,
        "schema_valid": valid_calls / pred_calls if pred_calls else None,
        "refusal": refus / n_text if n_text else None,
        "answers_result": answered / n_res if n_res else None,
        "parallel": par / n_par if n_par else None,
        "parse_failures": fails / len(items) if items else None,
        "turns": len(items), "pred_calls": pred_calls, "call_turns": n_call, "text_turns": n_text, "result_turns": n_res,
        "parallel_turns": n_par,
    }
    return m, failures, preds


def wire(messages: list[dict]) -> list[dict]:
    """Messages as the OpenAI API carries them: a call's arguments as JSON text (the template writes that text
    as it is, the same characters it writes for an object)."""
    out = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [{**c, "type": "function", "function": {
                **c["function"], "arguments": c["function"]["arguments"] if isinstance(c["function"]["arguments"], str)
                else json.dumps(c["function"]["arguments"], ensure_ascii=False)}} for c in m["tool_calls"]]
        out.append(m)
    return out


def from_message(msg: dict, fmt: str) -> tuple[str, Parsed]:
    """A server reply (content + tool_calls) as the produced text for predictions.jsonl and as Parsed calls."""
    calls = []
    for c in msg.get("tool_calls") or []:
        try:
            args = json.loads(c["function"]["arguments"])
        except ValueError:
            args = c["function"]["arguments"]
        calls.append({"name": c["function"]["name"], "arguments": args})
    content = msg.get("content") or ""
    # No call back: vLLM returns the whole reply as content, so tooltune's parser (its rules) tells a failed call
    error = None if calls else parse(content, fmt).error
    produced = content + "".join(f"\n[call] {json.dumps(c, ensure_ascii=False)}" for c in calls)
    return produced, Parsed(calls, content.strip(), error)


def compare_turns(mine: list[dict], theirs: dict) -> dict:
    """`mine`'s verdicts against `theirs` ({(id, turn): prediction}) on the turns both scored."""
    both = [(p, theirs[(p["id"], p["turn"])]) for p in mine if (p["id"], p["turn"]) in theirs]
    differ = [{"id": p["id"], "turn": p["turn"], "this": p["ok"], "other": q["ok"], "produced": p["produced"][:200],
               "other_produced": q["produced"][:200]} for p, q in both if p["ok"] != q["ok"]]
    return {"turns": len(both), "same_verdict": len(both) - len(differ), "this_ok": sum(p["ok"] for p, _ in both),
            "other_ok": sum(q["ok"] for _, q in both), "differ": differ}


def by_turn(preds: list[dict], label: str) -> dict:
    return {(p["id"], p["turn"]): p for p in preds if p["model"] == label}


def compare_engines(preds: list[dict], other: list[dict]) -> dict | None:
    """Turn by turn, this engine's verdicts against the other engine's on the same turns."""
    rows = {label: compare_turns([p for p in preds if p["model"] == label], by_turn(other, label)) for label in ("base", "tuned")}
    return {k: v for k, v in rows.items() if v["turns"]} or None


METRIC_NAMES = {"tool_selection": "tool selection", "arguments": "arguments", "schema_valid": "schema-valid calls",
                "refusal": "refusal / clarification", "answers_result": "answers a tool result",
                "parallel": "parallel calls", "parse_failures": "parse failures (lower is better)"}
EVAL_HEADER = ["metric", "base", "tuned", "target", "pass"]


def pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


# the turns (or calls) each metric is a share of
DENOMINATOR = {"tool_selection": "call_turns", "arguments": "call_turns", "schema_valid": "pred_calls",
               "refusal": "text_turns", "answers_result": "result_turns", "parallel": "parallel_turns",
               "parse_failures": "turns"}


def wilson(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a share measured on n items (right where the normal approximation is
    not: near 0%, near 100%, small n)."""
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pct_ci(metrics: dict | None, key: str) -> str:
    """A metric with its 95% interval, e.g. `44.1% [35-53]`; the bare figure where its sample size is unknown."""
    v = (metrics or {}).get(key)
    n = (metrics or {}).get(DENOMINATOR[key])
    if v is None or not n:
        return pct(v)
    lo, hi = wilson(v, n)
    return f"{v:.1%} [{lo * 100:.0f}-{hi * 100:.0f}]"


def eval_rows(ev: dict) -> list[list[str]]:
    """The eval table as plain cells, one row per metric: the terminal, evaluate/report.md, the run page and the
    model card all render these rows."""
    rows = []
    for k, name in METRIC_NAMES.items():
        target = (ev.get("targets") or TARGETS).get(k)
        verdict = "" if target is None else ("PASS" if ev["pass"].get(k) else "FAIL")
        # the turns a figure is a share of; schema-valid calls are a share of each model's own calls, not of turns
        n = None if k == "schema_valid" else (ev.get("tuned") or {}).get(DENOMINATOR[k])
        rows.append([f"{name} (n={n})" if n else name, pct_ci(ev.get("base"), k), pct_ci(ev.get("tuned"), k),
                     "" if target is None else f">= {target:.0%}", verdict])
    return rows


def markdown_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]

