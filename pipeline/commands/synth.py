"""Synthetic tool-calling conversations from a teacher model, checked by the validator, resumable.

    make synth TOOLS=tools.json N=2000 TEACHER=http://host:port/v1 MODEL=name [OUT=synth] [CONCURRENCY=4]

Any OpenAI-compatible server is a teacher (vLLM, llama-server, a hosted API); its key, if it needs one, is read
from the environment variable TEACHER_API_KEY and never written anywhere. The plan covers every tool in every
kind of conversation: single calls, parallel calls, multi-step chains with tool results, no tool fits, a
required argument missing, an error from the tool. Each reply goes through the validate stage's checks (and a
check that it is the kind asked for, and not a repeat): valid conversations land in OUT/accepted.jsonl, the rest
in OUT/review.jsonl with their errors and the teacher's reply, so nothing is dropped silently. Each finished
item is one appended line: interrupted (Ctrl-C, kill -9, the teacher down), the same command resumes with the
items not yet written, and never writes one twice. OUT/report.json counts what was generated, accepted and
queued, per kind and per tool. Train on the result with ARGS="data.train=OUT/accepted.jsonl data.tools=TOOLS".
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from pipeline.lib.common import StageError, console, rel, run_or_fail, write_json_atomic
from pipeline.lib.recipe import fail, scrub

KEY_ENV = "TEACHER_API_KEY"
# The plan's kinds and their shares of N (each kind cycles through every tool, so each tool gets its share of each).
KINDS = {"single_call": 0.34, "parallel": 0.12, "multi_step": 0.14, "no_tool_fits": 0.12, "missing_argument": 0.14,
         "tool_error": 0.14}
ASK = {
    "single_call": "The user asks for something that `{tool}` does, giving every required argument. The assistant "
                   "calls `{tool}` once, the tool answers, and the assistant tells the user the result.",
    "parallel": "The user asks for two independent things that both need `{tool}` (different arguments). The assistant "
                "makes both calls in one turn (two entries in tool_calls), both tools answer, and the assistant sums up.",
    "multi_step": "The user's request needs `{tool}` first and then `{tool2}`, using what the first call returned. The "
                  "assistant calls `{tool}`, reads the result, calls `{tool2}`, reads that result and answers.",
    "no_tool_fits": "The user asks for something none of the tools can do. The assistant calls no tool and says briefly "
                    "what it can help with instead.",
    "missing_argument": "The user asks for something `{tool}` does but leaves out a required argument. The assistant "
                        "calls no tool yet and asks for the missing detail; the user gives it; the assistant then calls "
                        "`{tool}` with every required argument, the tool answers, and the assistant tells the user.",
    "tool_error": "The user asks for something `{tool}` does. The assistant calls it; the tool answers with an error "
                  '(a JSON object with an "error" field); the assistant explains the problem and what the user can do.',
}
FORMAT = """Reply with one JSON object and nothing else, of this form:
{"messages": [
  {"role": "user", "content": "..."},
  {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
      "function": {"name": "<a tool's name>", "arguments": {<arguments that match its parameters>}}}]},
  {"role": "tool", "tool_call_id": "call_1", "content": "<the tool's JSON result>"},
  {"role": "assistant", "content": "..."}
]}
Only the tools listed may be called, with their exact names and parameter names; give only the optional
arguments the user mentioned. Invent realistic, specific values (names, ids, dates, amounts), and word the user
naturally: this is conversation {n} of many, so do not repeat the obvious example."""
SYSTEM = "You write training conversations for an assistant that calls tools. You answer with JSON only."


# --- the plan -----------------------------------------------------------------------------------------------

def plan(tools: list[dict], n: int, seed: int) -> list[dict]:
    """N items, the same first k for any N >= k (a larger N extends a plan): each a kind and the tool(s) it is about.
    Kinds are drawn by their shares with a fixed generator; within a kind, tools come round in turn."""
    names = [t["function"]["name"] for t in tools]
    rng = random.Random(seed)
    kinds, shares = list(KINDS), list(KINDS.values())
    turn = Counter()
    items = []
    for i in range(n):
        kind = rng.choices(kinds, shares)[0]
        k = turn[kind]
        turn[kind] += 1
        item = {"id": f"synth-{i + 1:05d}", "kind": kind}
        if kind != "no_tool_fits":
            item["tool"] = names[k % len(names)]
        if kind == "multi_step":
            item["tool2"] = names[(k + 1) % len(names)] if len(names) > 1 else names[0]
        items.append(item)
    return items


def prompt(item: dict, tools: list[dict]) -> list[dict]:
    listing = json.dumps([t["function"] for t in tools], ensure_ascii=False)
    ask = ASK[item["kind"]].format(tool=item.get("tool"), tool2=item.get("tool2"))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Tools (OpenAI function schemas):\n{listing}\n\nWrite one conversation. {ask}\n\n"
                                        + FORMAT.replace("{n}", item["id"].split("-")[1].lstrip("0") or "0")}]


# --- the teacher --------------------------------------------------------------------------------------------

class TeacherDown(RuntimeError):
    """The teacher kept failing after every retry."""


class Teacher:
    def __init__(self, url: str, model: str, max_tokens: int, temperature: float, retries: int, timeout: float):
        self.url = url.rstrip("/")
        self.model, self.max_tokens, self.temperature = model, max_tokens, temperature
        self.retries, self.timeout = retries, timeout
        self.key = os.environ.get(KEY_ENV)
        self.json_mode = True  # asked for JSON output; dropped for good if the server refuses the option
        self.lock = threading.Lock()

    def _post(self, body: dict) -> dict:
        import urllib.request

        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        req = urllib.request.Request(f"{self.url}/chat/completions", data=json.dumps(body).encode(), headers=headers)
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            return json.loads(r.read())

    def ask(self, messages: list[dict], seed: int) -> str:
        import urllib.error

        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "seed": seed}
        last = ""
        for attempt in range(self.retries + 1):
            if self.json_mode:
                body["response_format"] = {"type": "json_object"}
            else:
                body.pop("response_format", None)
            try:
                reply = self._post(body)
                return reply["choices"][0]["message"].get("content") or ""
            except urllib.error.HTTPError as e:
                text = e.read()[:500].decode(errors="replace")
                if e.code == 400 and self.json_mode and "response_format" in text:
                    with self.lock:
                        self.json_mode = False  # this server has no JSON mode: ask in words only
                    continue
                if e.code not in (408, 409, 425, 429) and e.code < 500:
                    raise TeacherDown(f"the teacher refused the request ({e.code}): {text}") from None
                last = f"HTTP {e.code}: {text}"
            except (OSError, ValueError, KeyError, IndexError) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.retries:
                time.sleep(min(30.0, 2 ** attempt) * (0.5 + random.random() / 2))  # exponential backoff with jitter
        raise TeacherDown(f"the teacher failed {self.retries + 1} times; last: {scrub(last)}")


# --- checking a reply ---------------------------------------------------------------------------------------

def parse_reply(text: str):
    """The JSON object in a teacher's reply (code fences and prose around it allowed), or None."""
    text = re.sub(r"^```(?:json)?\s*|\s*```\s*$", "", text.strip())
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def called(messages: list[dict]) -> list[list[str]]:
    """The tool names called in each assistant turn that calls."""
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            out.append([(c.get("function") or {}).get("name") for c in m["tool_calls"]])
    return out


def kind_problems(item: dict, messages: list[dict]) -> list[str]:
    """Is the conversation the kind that was asked for?"""
    calls = called(messages)
    flat = [n for turn in calls for n in turn]
    kind, tool = item["kind"], item.get("tool")
    first_assistant = next((m for m in messages if m.get("role") == "assistant"), {})
    if kind == "no_tool_fits":
        return ["a tool is called where none fits"] if flat else []
    if tool not in flat:
        return [f"`{tool}` is never called"]
    if kind == "parallel" and not any(len(t) >= 2 for t in calls):
        return ["no turn makes two calls at once"]
    if kind == "multi_step" and (len(calls) < 2 or item["tool2"] not in flat):
        return [f"not two turns of calls, `{tool}` then `{item['tool2']}`"]
    if kind == "missing_argument" and first_assistant.get("tool_calls"):
        return ["the assistant calls before asking for the missing argument"]
    if kind == "tool_error" and not any(m.get("role") == "tool" and "error" in str(m.get("content", "")).lower()
                                        for m in messages):
        return ["no tool result reports an error"]
    return []


def first_user_key(messages: list[dict]) -> str:
    from pipeline.lib.conversations import norm_text

    text = next((m.get("content") for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)), "")
    return norm_text(text)


def judge(item: dict, reply: str, tools: list[dict], seen: dict[str, str], schemas) -> tuple[dict | None, dict]:
    """(accepted line, None) or (None, review entry) for one teacher reply."""
    from pipeline.lib.conversations import check_line

    base = {"id": item["id"], "kind": item["kind"], **{k: item[k] for k in ("tool", "tool2") if k in item}}
    obj = parse_reply(reply)
    if obj is None:
        return None, {**base, "errors": [{"code": "not_json", "message": "the reply holds no JSON object"}], "reply": reply}
    conv = {"id": item["id"], "kind": item["kind"], "messages": obj.get("messages")}
    raw = json.dumps(conv, ensure_ascii=False).encode("utf-8")
    rec, errors = check_line(raw, tools, schemas)
    errors = [{"code": e["code"], "message": e["message"]} for e in errors]
    if rec is not None:
        errors += [{"code": "wrong_kind", "message": m} for m in kind_problems(item, conv["messages"])]
        key = first_user_key(conv["messages"])
        if not errors and key in seen:
            errors.append({"code": "duplicate", "message": f"the same first user message as {seen[key]}"})
    if errors:  # the reply as written stays beside the conversation read from it
        return None, {**base, "errors": errors, "conversation": conv, "reply": reply}
    seen[first_user_key(conv["messages"])] = item["id"]
    return conv, {}


# --- files --------------------------------------------------------------------------------------------------

def read_done(path: Path) -> list[dict]:
    """The lines of an output file; a last line cut off by a kill is removed from the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    rows, good = [], 0
    for k, line in enumerate(lines):
        if not line.strip():
            good += len(line) + 1
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            if k == len(lines) - 1 or all(not x.strip() for x in lines[k + 1:]):
                break  # the partial last line of an interrupted write: the item is done again
            raise StageError(f"{rel(path)} line {k + 1} is not JSON (edited by hand?): fix or delete that line.") from None
        good += len(line) + 1
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(min(good, len(data)))
    return rows


def append_line(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_tools(path: Path) -> list[dict]:
    from pipeline.lib.conversations import load_tools_file

    if not path.is_file():
        raise StageError(f"TOOLS={path}: no such file (make tools writes one from an MCP server).")
    tools = load_tools_file(path)
    if not tools:
        raise StageError(f"{rel(path)} lists no tools.")
    return tools


def report(out: Path, items: list[dict], accepted: list[dict], queued: list[dict], meta: dict,
           dropped: int = 0) -> dict:
    by_kind: dict[str, Counter] = {}
    by_tool: dict[str, Counter] = {}
    tool_of = {i["id"]: i.get("tool") for i in items}
    for verdict, rows in (("accepted", accepted), ("queued", queued)):
        for r in rows:
            by_kind.setdefault(r["kind"], Counter())[verdict] += 1
            item_tool = tool_of.get(r["id"])
            if item_tool:
                by_tool.setdefault(item_tool, Counter())[verdict] += 1
    codes = Counter(e["code"] for q in queued for e in q.get("errors", []))
    doc = {**meta, "planned": len(items), "generated": len(accepted) + len(queued) + dropped, "accepted": len(accepted),
           "queued": len(queued), "dropped_in_review": dropped, "accept_rate": round(len(accepted) / max(1, len(accepted) + len(queued)), 4),
           "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
           "by_tool": {k: dict(v) for k, v in sorted(by_tool.items())}, "queued_by_code": dict(codes.most_common())}
    write_json_atomic(out / "report.json", doc)
    return doc


# --- the run ------------------------------------------------------------------------------------------------

def run(tools_path: Path, n: int, teacher: Teacher, out: Path, concurrency: int, seed: int) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pipeline.lib.conversations import Schemas

    tools = load_tools(tools_path)
    out.mkdir(parents=True, exist_ok=True)
    tools_hash = hashlib.sha256(json.dumps(tools, sort_keys=True).encode()).hexdigest()[:16]
    stamp_path = out / "plan.json"
    stamp = {"tools": str(tools_path), "tools_sha256": tools_hash, "seed": seed, "kinds": KINDS}
    if stamp_path.is_file():
        before = json.loads(stamp_path.read_text())
        if {k: before.get(k) for k in ("tools_sha256", "seed", "kinds")} != {k: stamp[k] for k in ("tools_sha256", "seed", "kinds")}:
            raise StageError(f"{rel(out)} holds conversations of other tools or another seed: choose another OUT= "
                             "(or delete that folder to start over).")
    write_json_atomic(stamp_path, {**stamp, "n": n})
    if (out / "review.jsonl").is_file():
        moved = apply_decisions(out, tools)
        if moved:
            console.print("synth: review decisions applied: " + ", ".join(f"{n} {k}" for k, n in moved.items()))
    items = plan(tools, n, seed)
    accepted_path, review_path = out / "accepted.jsonl", out / "review.jsonl"
    accepted, queued, dropped = read_done(accepted_path), read_done(review_path), read_done(out / "dropped.jsonl")
    done = {r["id"] for r in accepted} | {r["id"] for r in queued} | {r["id"] for r in dropped}
    seen = {first_user_key(r["messages"]): r["id"] for r in accepted}
    todo = [it for it in items if it["id"] not in done]
    meta = {"teacher": re.sub(r"//[^/@]*@", "//", teacher.url), "model": teacher.model, "tools": str(tools_path)}
    if done:
        console.print(f"synth: resuming: {len(done)} of {len(items)} already written ({len(accepted)} accepted, "
                      f"{len(queued)} queued for review)")
    schemas = Schemas()
    lock = threading.Lock()
    stop = threading.Event()
    problem: list[BaseException] = []

    def work(item: dict) -> tuple[dict, str]:
        if stop.is_set():
            return item, None
        return item, teacher.ask(prompt(item, tools), seed=int(item["id"].split("-")[1]) + seed * 1_000_003)

    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("accepted {task.fields[rate]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as bar, cf.ThreadPoolExecutor(max_workers=concurrency) as pool:
        task = bar.add_task("synth", total=len(items), completed=len(done),
                            rate=f"{len(accepted) / max(1, len(done)):.0%}" if done else "-")
        futures = [pool.submit(work, it) for it in todo]
        try:
            for fut in cf.as_completed(futures):
                try:
                    item, reply = fut.result()
                except TeacherDown as e:
                    problem.append(e)
                    stop.set()
                    continue
                if reply is None:
                    continue
                with lock:
                    line, entry = judge(item, reply, tools, seen, schemas)
                    if line is not None:
                        append_line(accepted_path, line)
                        accepted.append(line)
                    else:
                        append_line(review_path, entry)
                        queued.append(entry)
                bar.update(task, advance=1, rate=f"{len(accepted) / max(1, len(accepted) + len(queued)):.0%}")
        except KeyboardInterrupt:
            stop.set()
            for f in futures:
                f.cancel()
            report(out, items, accepted, queued, meta, len(dropped))
            raise
    doc = report(out, items, accepted, queued, meta, len(dropped))
    if problem:
        raise StageError(f"{problem[0]}. {doc['generated']} of {len(items)} conversations are written; run the same "
                         "command again to resume.")
    console.print(f"synth: {doc['generated']} generated: {doc['accepted']} accepted -> {rel(accepted_path)}, "
                  f"{doc['queued']} queued for review -> {rel(review_path)} (by error: {doc['queued_by_code'] or 'none'})")
    return doc


# --- review -------------------------------------------------------------------------------------------------

DECISIONS = ("accept", "drop")


def apply_decisions(out: Path, tools: list[dict]) -> dict:
    """Carry out what a person wrote into review.jsonl: `"decision": "accept"` (the `conversation`, fixed by hand
    where needed, is checked again: valid, it joins accepted.jsonl; not, it stays queued with its new errors) or
    `"decision": "drop"` (it moves to dropped.jsonl, kept, not deleted). Entries without a decision stay queued."""
    from pipeline.lib.common import write_text_atomic
    from pipeline.lib.conversations import Schemas, check_line

    review, accepted_path, dropped_path = out / "review.jsonl", out / "accepted.jsonl", out / "dropped.jsonl"
    rows = read_done(review)
    seen = {first_user_key(r["messages"]): r["id"] for r in read_done(accepted_path)}
    schemas = Schemas()
    keep, moved = [], Counter()
    for r in rows:
        decision = r.get("decision")
        if decision is None:
            keep.append(r)
            continue
        if decision not in DECISIONS:
            keep.append({**r, "errors": [{"code": "decision", "message": f"decision {decision!r} is not one of {DECISIONS}"}]})
            moved["unclear"] += 1
            continue
        if decision == "drop":
            append_line(dropped_path, {k: v for k, v in r.items() if k != "decision"})
            moved["dropped"] += 1
            continue
        conv = r.get("conversation") or parse_reply(r.get("reply", "")) or {}
        conv = {"id": r["id"], "kind": r["kind"], "messages": conv.get("messages")}
        rec, errors = check_line(json.dumps(conv, ensure_ascii=False).encode(), tools, schemas)
        if rec is not None and first_user_key(conv["messages"]) in seen:
            errors = [{"code": "duplicate", "message": f"the same first user message as {seen[first_user_key(conv['messages'])]}"}]
        if rec is None or errors:
            rest = {k: v for k, v in r.items() if k != "decision"}
            keep.append({**rest, "conversation": conv, "errors": [{"code": e["code"], "message": e["message"]} for e in errors]})
            moved["still invalid"] += 1
            continue
        append_line(accepted_path, {**conv, "reviewed": True})
        seen[first_user_key(conv["messages"])] = r["id"]
        moved["accepted"] += 1
    if moved:
        write_text_atomic(review, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in keep))
    return dict(moved)


def review_page(rows: list[dict]) -> str:
    import html

    parts = ["<!doctype html><html lang=en><head><meta charset=utf-8><title>tooltune review</title><style>"
             "body{font:14px system-ui,sans-serif;max-width:1100px;margin:20px auto;color:#202124}"
             ".e{color:#a50e0e}pre{white-space:pre-wrap;background:#f8f9fa;border:1px solid #dadce0;padding:8px}"
             "</style></head><body>", f"<h1>{len(rows)} conversations to review</h1>",
             "<p>In review.jsonl, add <code>\"decision\": \"accept\"</code> (after fixing the <code>conversation</code> "
             "where needed) or <code>\"decision\": \"drop\"</code> to an entry, then run <code>make review</code> (or the "
             "next <code>make synth</code>): accepted ones are checked again and join accepted.jsonl; dropped ones move "
             "to dropped.jsonl.</p>"]
    for r in rows:
        body = r.get("conversation") or r.get("reply", "")
        parts.append(f"<h3>{html.escape(r['id'])} ({html.escape(r['kind'])}{', ' + html.escape(str(r['tool'])) if r.get('tool') else ''})</h3>"
                     + "".join(f"<div class=e>{html.escape(e['code'])}: {html.escape(e['message'])}</div>" for e in r["errors"])
                     + f"<pre>{html.escape(json.dumps(body, ensure_ascii=False, indent=1) if isinstance(body, dict) else body)}</pre>")
    return "".join(parts) + "</body></html>\n"


def review(tools_path: Path, out: Path) -> dict:
    from pipeline.lib.common import write_text_atomic

    tools = load_tools(tools_path)
    if not (out / "review.jsonl").is_file():
        raise StageError(f"{rel(out)}/review.jsonl does not exist: run make synth first (OUT={out}).")
    moved = apply_decisions(out, tools)
    rows = read_done(out / "review.jsonl")
    write_text_atomic(out / "review.html", review_page(rows))
    if moved:
        console.print("review: " + ", ".join(f"{n} {k}" for k, n in moved.items()))
    codes = Counter(e["code"] for r in rows for e in r["errors"])
    for r in rows[:10]:
        console.print(f"  {r['id']} ({r['kind']}): " + "; ".join(f"{e['code']}: {e['message'][:100]}" for e in r["errors"]))
    console.print(f"review: {len(rows)} queued ({dict(codes.most_common()) or 'none'}); every one in "
                  f"{rel(out / 'review.html')}; decide in {rel(out / 'review.jsonl')} and run make review again")
    return {"moved": moved, "queued": len(rows)}


def main(argv=None) -> None:
    import argparse

    env = os.environ.get
    ap = argparse.ArgumentParser(prog="python -m pipeline.commands.synth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tools", default=env("TOOLTUNE_TOOLS") or "tools.json", help="the OpenAI tools list (make tools)")
    ap.add_argument("--n", type=int, default=int(env("TOOLTUNE_N") or 0), help="conversations to generate")
    ap.add_argument("--teacher", default=env("TOOLTUNE_TEACHER"), help="the teacher's OpenAI-compatible base URL (…/v1)")
    ap.add_argument("--model", default=env("TOOLTUNE_MODEL"), help="the teacher's model name")
    ap.add_argument("--out", default="synth", help="folder for accepted.jsonl, review.jsonl, report.json")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    ap.add_argument("--max-tokens", type=int, default=1024, help="longest teacher reply, in tokens")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--retries", type=int, default=5, help="retries of a failed request, with exponential backoff")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one reply")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--review", action="store_true", help="apply the decisions in OUT/review.jsonl and list what is queued")
    a = ap.parse_args(argv)
    if a.review:
        run_or_fail("review", lambda: review(Path(a.tools), Path(a.out)), "nothing was changed.")
        return
    missing = [f"{name}=" for name, v in (("TEACHER", a.teacher), ("MODEL", a.model)) if not v]
    if a.n < 1:
        missing.append("N= (at least 1)")
    if missing:
        fail("make synth needs " + ", ".join(missing) + ": e.g. make synth TOOLS=tools.json N=2000 "
             "TEACHER=http://localhost:8000/v1 MODEL=my-teacher")
    if a.concurrency < 1 or a.max_tokens < 1 or a.retries < 0:
        fail("--concurrency and --max-tokens must be at least 1, --retries at least 0.")
    teacher = Teacher(a.teacher, a.model, a.max_tokens, a.temperature, a.retries, a.timeout)
    run_or_fail("synth", lambda: run(Path(a.tools), a.n, teacher, Path(a.out), a.concurrency, a.seed),
                "what was finished is written: run the same command again to resume.")


if __name__ == "__main__":
    main(sys.argv[1:])
