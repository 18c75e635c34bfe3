"""Stage 1, validate: check every line of the data against the tool schemas; split train/eval.

    python -m pipeline.validate --recipe smollm2-135m-tools [data.train=FILE data.tools=TOOLS ...]
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
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from pipeline.lib.common import (StageError, console, fingerprint, rel, stage_main, up_to_date, write_json_atomic,
                             write_jsonl_atomic, write_sidecar)
from pipeline.lib.recipe import ROOT, Recipe, glob_paths
from pipeline.lib.parse import acceptable_args

STAGE = "validate"
ROLES = {"system", "user", "assistant", "tool"}
MIN_EXAMPLES_PER_TOOL = 50  # the article's advice: fewer than ~50 examples a tool and selection suffers
MAX_LINE_BYTES = 4 << 20
RAW_KEPT = 20_000  # characters of a rejected line copied into rejects.jsonl (file and line point to the whole)
BOM = b"\xef\xbb\xbf"
# A tool name as the OpenAI API allows it (plus `.`, which BFCL uses): it is written between quotes in
# every template and parsed back by the serving engine, so quotes, spaces and markup have no place in it.
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Chat-control markup that a tokenizer turns into control tokens, or a parser into a call: in content it
# would let a user's text end a turn or forge one in training. The ChatML/Llama 3/Phi shape <|...|>, the
# Hermes tool tags and Mistral's bracketed controls; the tokenizer-specific rest is checked by count.
CONTROL = re.compile(r"<\|[^|<>\s]{1,64}\|>|</?(?:tool_call|tool_response|tools)>|\[/?(?:INST|TOOL_CALLS|AVAILABLE_TOOLS|"
                     r"TOOL_RESULTS|SYSTEM_PROMPT)\]")

# Each code: (what is wrong, how to fix it). Codes are stable: tests and users grep for them.
CODES = {
    "utf8": "the line is not valid UTF-8; re-save the file as UTF-8",
    "json": "the line is not valid JSON; one JSON object per line, no trailing commas, no multi-line objects, "
            "no NaN or Infinity (write a number or null)",
    "duplicate_key": "an object has the same key twice, and readers disagree on which value counts: keep one",
    "special_token": "content holds chat-control markup (like <|im_end|>, <tool_call> or [INST]) that would be "
                     "read as a control token or a call, not as text: remove or reword it",
    "surrogate": "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is no character: fix or drop it",
    "not_object": "the line must be a JSON object with a `messages` list",
    "too_long": "the line is over 4 MiB; split the conversation",
    "messages_missing": "add `messages`: a non-empty list of {role, content} objects",
    "message_not_object": "each message must be an object with `role` and `content`",
    "role_unknown": "use one of the roles system, user, assistant, tool",
    "content_type": "`content` must be a string (null is allowed only on an assistant turn with tool_calls)",
    "system_not_first": "put the single system message first",
    "first_turn": "the conversation must start (after the system prompt) with a user turn",
    "tool_result_orphan": "a `tool` message must follow the assistant call it answers",
    "tool_call_id_unknown": "set the tool message's `tool_call_id` to the id of the call it answers",
    "tool_call_id_duplicate": "give every call in a conversation its own id",
    "call_unanswered": "answer every tool call with a `tool` message before the next user turn",
    "ends_without_assistant": "end the conversation with an assistant turn (the thing the model learns)",
    "assistant_empty": "give the assistant turn text `content` or `tool_calls`",
    "tool_call_malformed": "write calls as {\"type\": \"function\", \"function\": {\"name\": ..., \"arguments\": {...}}}",
    "tool_undeclared": "declare the tool in `tools` (per line), in data.tools, or as a signature in the system prompt",
    "arguments_not_json": "`arguments` must be a JSON object or a string holding one",
    "arguments_schema": "make the arguments match the tool's JSON Schema",
    "acceptable_malformed": "`acceptable` maps each argument to a non-empty list of the values a reply may give it "
                            "(\"\" among them: it may be left out), and the call's own `arguments` must be one of them",
    "tools_invalid": "`tools` must be a list of {\"type\": \"function\", \"function\": {name, description, parameters}} "
                     "with a valid JSON Schema for parameters",
    "no_tools": "the conversation calls tools but none are declared; set data.tools or add `tools` to the line",
    "duplicate": "the same conversation appears earlier; remove the copy",
    "duplicate_normalized": "the same conversation (ignoring case and spacing) appears earlier; remove the copy",
    "eval_leak": "this training line's user turn is also in the eval split; drop it or move it",
}


def problem(code: str, message: str) -> dict:
    return {"code": code, "message": message, "fix": CODES[code]}


class DuplicateKey(ValueError):
    pass


class NotFinite(ValueError):
    pass


def _pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise DuplicateKey(f"key {dup!r} appears twice in one object")
    return d


def _constant(name: str):
    raise NotFinite(f"{name} is not a JSON number")


def loads_strict(text: str):
    """json.loads, but NaN/Infinity (Python writes and reads them; JSON has none) and duplicate keys (the last
    silently wins) raise NotFinite / DuplicateKey; nesting too deep raises RecursionError, as json.loads does."""
    return json.loads(text, parse_constant=_constant, object_pairs_hook=_pairs)


def control_markup(value) -> str | None:
    """The first chat-control marker in any string inside `value` (checked on its JSON text), or None."""
    m = CONTROL.search(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return m.group(0) if m else None


def load_tools_file(path: Path) -> list[dict]:
    """data.tools as the validator (and the planner) reads it: strict JSON, every problem a clear StageError."""
    where = f"{rel(path)} (data.tools)"
    try:
        doc = loads_strict(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise StageError(f"{where} is not UTF-8 (byte {e.start}: {e.reason}): save it as UTF-8.") from None
    except RecursionError:
        raise StageError(f"{where} is nested too deeply to read: no tool schema needs that; flatten it.") from None
    except (DuplicateKey, NotFinite) as e:
        raise StageError(f"{where}: {e}; {CODES['duplicate_key' if isinstance(e, DuplicateKey) else 'json']}.") from None
    except ValueError as e:
        raise StageError(f"{where} is not valid JSON: {e}") from None
    tools, errs = normalize_tools(doc)
    if errs:
        raise StageError(f"{where}: " + "; ".join(f"{e['code']}: {e['message']}" for e in errs) + f". Fix: {errs[0]['fix']}.")
    return tools


# --- tools -----------------------------------------------------------------------------------

def normalize_tools(tools) -> tuple[list[dict] | None, list[dict]]:
    """OpenAI tools list (or bare function dicts) -> canonical list; errors if malformed."""
    if isinstance(tools, str):
        try:
            tools = loads_strict(tools)
        except DuplicateKey as e:
            return None, [problem("duplicate_key", f"`tools` (a JSON string): {e}")]
        except (ValueError, RecursionError):
            return None, [problem("tools_invalid", "`tools` is a string that is not JSON")]
    if not isinstance(tools, list):
        return None, [problem("tools_invalid", f"`tools` is {type(tools).__name__}, not a list")]
    out, errors = [], []
    named: dict[str, int] = {}
    for k, t in enumerate(tools):
        fn = t.get("function", t) if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            errors.append(problem("tools_invalid", f"tools[{k}] has no function name"))
            continue
        if not TOOL_NAME.match(fn["name"]):
            errors.append(problem("tools_invalid", f"tools[{k}]: name {fn['name'][:80]!r} is not allowed: use letters, "
                                                   "digits, `_`, `.`, `-` (at most 64), as the OpenAI API does"))
            continue
        if fn["name"] in named:
            errors.append(problem("tools_invalid", f"tools[{k}]: a second tool named {fn['name']!r} (tools[{named[fn['name']]}] "
                                                   "has that name); give each tool its own name"))
            continue
        named[fn["name"]] = k
        if fn.get("description") is not None and not isinstance(fn["description"], str):
            errors.append(problem("tools_invalid", f"tools[{k}] ({fn['name']}): description is "
                                                   f"{type(fn['description']).__name__}, not a string"))
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            errors.append(problem("tools_invalid", f"tools[{k}] ({fn['name']}): parameters is not an object"))
            continue
        try:
            Draft202012Validator.check_schema(params)
        except SchemaError as e:
            errors.append(problem("tools_invalid", f"tools[{k}] ({fn['name']}): invalid JSON Schema: {e.message[:200]}"))
            continue
        except RecursionError:
            errors.append(problem("tools_invalid", f"tools[{k}] ({fn['name']}): the parameters schema is nested too deeply"))
            continue
        clean = {"name": fn["name"], "description": fn.get("description") or "", "parameters": params}
        marker = control_markup(clean)
        if marker:
            errors.append(problem("special_token", f"tools[{k}] ({fn['name']}): {marker!r} in its description or schema"))
            continue
        out.append({"type": "function", "function": clean})
    return out, errors


def toolset_key(tools: list[dict]) -> str:
    return hashlib.sha256(json.dumps(tools, sort_keys=True).encode()).hexdigest()[:16]


class Schemas:
    """Compiled validators, one per distinct tool schema (compiling is the slow part)."""

    def __init__(self):
        self.cache: dict[str, Draft202012Validator] = {}

    def validator(self, params: dict) -> Draft202012Validator:
        key = json.dumps(params, sort_keys=True)
        v = self.cache.get(key)
        if v is None:
            v = self.cache[key] = Draft202012Validator(params)
        return v


def signature_tools(messages: list) -> list[dict]:
    """Tools written only as Python-like signatures in the system prompt (as in the article's example)."""
    if not messages or not isinstance(messages[0], dict) or messages[0].get("role") != "system":
        return []
    content = messages[0].get("content")
    if not isinstance(content, str) or "(" not in content:
        return []
    from pipeline.lib.signatures import parse_signatures

    return parse_signatures(content)


# --- one line ----------------------------------------------------------------------------------

def check_line(raw: bytes, dataset_tools: list[dict] | None, schemas: Schemas) -> tuple[dict | None, list[dict]]:
    """Return (normalized record, []) or (None, every problem found on the line)."""
    if len(raw) > MAX_LINE_BYTES:
        return None, [problem("too_long", f"{len(raw)} bytes")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [problem("utf8", f"byte {e.start}: {e.reason}")]
    try:
        obj = loads_strict(text)
    except DuplicateKey as e:
        return None, [problem("duplicate_key", str(e)[:200])]
    except NotFinite as e:
        return None, [problem("json", f"{e}: JSON has no NaN or Infinity")]
    except (ValueError, RecursionError) as e:
        return None, [problem("json", str(e)[:200])]
    if not isinstance(obj, dict):
        return None, [problem("not_object", f"got a JSON {type(obj).__name__}")]
    if "\\u" in text:  # an escape can encode half a surrogate pair, which no later step can write or tokenize
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            return None, [problem("surrogate", f"{e.object[max(0, e.start - 20):e.start]!r} is followed by {e.object[e.start]!r}")]
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, [problem("messages_missing", "`messages` is missing, empty or not a list")]

    errors: list[dict] = []
    tools, source = None, None
    if "tools" in obj and obj["tools"] is not None:
        tools, errs = normalize_tools(obj["tools"])
        errors += errs
        source = "line"
    elif dataset_tools is not None:
        tools, source = dataset_tools, "dataset"
    else:
        parsed = signature_tools(messages)
        if parsed:
            tools, errs = normalize_tools(parsed)
            errors += errs
            source = "signatures"
    by_name = {t["function"]["name"]: t["function"] for t in tools or []}

    out_msgs: list[dict] = []
    pending: dict[str, str] = {}  # call id -> tool name, not yet answered
    seen_ids: set[str] = set()
    call_counter = 0
    last_role = None
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            errors.append(problem("message_not_object", f"{where} is {type(m).__name__}"))
            continue
        role = m.get("role")
        if not isinstance(role, str) or role not in ROLES:
            errors.append(problem("role_unknown", f"{where}: role {role!r}"))
            continue
        content = m.get("content")
        if role == "system":
            if i != 0:
                errors.append(problem("system_not_first", f"{where} is a system message"))
            if not isinstance(content, str):
                errors.append(problem("content_type", f"{where} (system): content is {type(content).__name__}"))
                continue
            out_msgs.append({"role": "system", "content": content})
        elif role == "user":
            if pending:
                errors.append(problem("call_unanswered", f"{where}: calls {sorted(pending.values())} have no result"))
                pending.clear()
            if not isinstance(content, str):
                errors.append(problem("content_type", f"{where} (user): content is {type(content).__name__}"))
                continue
            out_msgs.append({"role": "user", "content": content})
        elif role == "assistant":
            if last_role in (None, "system"):
                errors.append(problem("first_turn", f"{where}: assistant speaks before any user turn"))
            calls = m.get("tool_calls") or []
            if content is not None and not isinstance(content, str):
                errors.append(problem("content_type", f"{where} (assistant): content is {type(content).__name__}"))
                continue
            if not isinstance(calls, list):
                errors.append(problem("tool_call_malformed", f"{where}: tool_calls is not a list"))
                continue
            if not calls and not (content or "").strip():
                errors.append(problem("assistant_empty", f"{where}: no content and no tool_calls"))
                continue
            if pending and calls:
                errors.append(problem("call_unanswered", f"{where}: new calls before {sorted(pending.values())} were answered"))
                pending.clear()
            norm_calls = []
            for k, c in enumerate(calls):
                cw = f"{where}.tool_calls[{k}]"
                fn = c.get("function", c) if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn.get("name"):
                    errors.append(problem("tool_call_malformed", f"{cw} has no function name"))
                    continue
                name = fn["name"]
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = loads_strict(args) if args.strip() else {}
                    except DuplicateKey as e:
                        errors.append(problem("duplicate_key", f"{cw} ({name}) arguments: {e}"))
                        continue
                    except (ValueError, RecursionError):
                        errors.append(problem("arguments_not_json", f"{cw} ({name}): arguments string is not JSON "
                                                                    "(or holds NaN/Infinity)"))
                        continue
                if not isinstance(args, dict):
                    errors.append(problem("arguments_not_json", f"{cw} ({name}): arguments is {type(args).__name__}"))
                    continue
                if tools is None:
                    errors.append(problem("no_tools", f"{cw} calls {name!r}"))
                elif name not in by_name:
                    known = ", ".join(sorted(by_name)[:20])
                    errors.append(problem("tool_undeclared", f"{cw} calls {name!r}; declared ({source}): {known}"))
                else:
                    v = schemas.validator(by_name[name]["parameters"])
                    try:
                        found = sorted(v.iter_errors(args), key=lambda e: list(e.path))[:5]
                    except (Unresolvable, RecursionError) as e:  # a "$ref" it does not define, or one to itself
                        why = "it refers to itself without end" if isinstance(e, RecursionError) else str(e)[:200]
                        errors.append(problem("tools_invalid", f"{cw} ({name}): the tool's parameters schema cannot be "
                                                               f"applied: {why}"))
                        found = []
                    for err in found:
                        path = ".".join(str(p) for p in err.path) or "(arguments)"
                        errors.append(problem("arguments_schema", f"{cw} ({name}) {path}: {err.message[:200]}"))
                call_id = c.get("id") if isinstance(c, dict) else None
                if call_id is None:
                    call_id = f"call_{call_counter}"
                call_id = str(call_id)
                call_counter += 1
                if call_id in seen_ids:
                    errors.append(problem("tool_call_id_duplicate", f"{cw}: id {call_id!r} used twice"))
                seen_ids.add(call_id)
                pending[call_id] = name
                norm_calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": args}})
                acceptable = c.get("acceptable") if isinstance(c, dict) else None
                if acceptable is not None:
                    if not (isinstance(acceptable, dict) and all(isinstance(v, list) and v for v in acceptable.values())
                            and acceptable_args(args, acceptable)):
                        errors.append(problem("acceptable_malformed", f"{cw} ({name}): `acceptable` is not a map of "
                                                                      "argument -> acceptable values that admits the call's arguments"))
                    norm_calls[-1]["acceptable"] = acceptable
            msg = {"role": "assistant", "content": content if (content or "").strip() else None}
            if norm_calls:
                msg["tool_calls"] = norm_calls
            out_msgs.append(msg)
        elif role == "tool":
            if not isinstance(content, str):
                if isinstance(content, (dict, list)):
                    content = json.dumps(content, ensure_ascii=False)
                else:
                    errors.append(problem("content_type", f"{where} (tool): content is {type(content).__name__}"))
                    continue
            if last_role not in ("assistant", "tool") or not pending:
                errors.append(problem("tool_result_orphan", f"{where}: no unanswered call before it"))
                continue
            call_id = m.get("tool_call_id")
            if call_id is None:
                call_id = next(iter(pending))  # ids are optional: answer calls in order
            call_id = str(call_id)
            if call_id not in pending:
                errors.append(problem("tool_call_id_unknown", f"{where}: tool_call_id {call_id!r} is not an open call"))
                continue
            name = pending.pop(call_id)
            given = m.get("name")
            out_msgs.append({"role": "tool", "tool_call_id": call_id, "name": given if isinstance(given, str) and given else name,
                             "content": content})
        last_role = role
    if out_msgs and out_msgs[-1]["role"] != "assistant":
        errors.append(problem("ends_without_assistant", f"last message is {out_msgs[-1]['role']!r}"))
    if not errors:  # every message kept, so out_msgs[i] is messages[i]
        for i, m in enumerate(out_msgs):
            marker = control_markup(m)
            if marker:
                errors.append(problem("special_token", f"messages[{i}] ({m['role']}): {marker!r}"))
    if errors:
        return None, errors
    record = {"messages": out_msgs, "tools": tools or []}
    if isinstance(obj.get("id"), (str, int)):
        record["id"] = str(obj["id"])
    if isinstance(obj.get("kind"), str):
        record["kind"] = obj["kind"]
    return record, []


# --- whole files -------------------------------------------------------------------------------

def turn_types(messages: list[dict]) -> list[str]:
    call_turns = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    kinds = []
    for m in messages:
        if m["role"] != "assistant":
            continue
        if not m.get("tool_calls"):
            kinds.append("text_answer")
        elif len(m["tool_calls"]) > 1:
            kinds.append("parallel_calls")
        elif len(call_turns) > 1:
            kinds.append("multi_step_call")
        else:
            kinds.append("single_call")
    return kinds


def first_user(messages: list[dict]) -> str:
    return next((m["content"] for m in messages if m["role"] == "user"), "")


def norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip().lower())


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


def raw_field(raw: bytes) -> dict:
    """The rejected line as text for rejects.jsonl: whole up to RAW_KEPT characters, else its start and its size."""
    text = raw[: RAW_KEPT * 4].decode("utf-8", errors="replace")
    if len(raw) <= RAW_KEPT and len(text) <= RAW_KEPT:
        return {"raw": text}
    return {"raw": text[:RAW_KEPT], "raw_truncated": True, "raw_bytes": len(raw)}


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


def reject_record(r: dict, err: dict) -> dict:
    raw = {"messages": r["messages"], "tools": r["tools"]}
    return {**r["source"], "raw": json.dumps(raw, ensure_ascii=False), "errors": [err]}


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


def load_split(run_dir: Path, split_name: str) -> list[dict]:
    """Read validate/<split>.jsonl with the tool lists attached (for the later stages)."""
    vdir = Path(run_dir) / "validate"
    toolsets = json.loads((vdir / "toolsets.json").read_text())
    out = []
    with open(vdir / f"{split_name}.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            r["tools"] = toolsets[r["toolset"]]  # one list object per toolset; the key stays for grouping
            out.append(r)
    return out


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

    report = {
        "lines_read": read,
        "accepted": len(train) + len(evals),
        "rejected": len(rejects),
        "unused_valid": unused,
        "balanced": read == len(train) + len(evals) + len(rejects) + unused,
        "train": len(train),
        "eval": len(evals),
        "eval_source": "data.eval" if eval_files else f"split {d.eval_fraction:.0%} (max {d.eval_max})",
        "errors_by_code": dict(codes.most_common()),
        "calls_per_tool": dict(sorted(per_tool.items())),
        "calls_per_tool_counted_over": all_train,
        "own_tools": sorted(own),
        "other_tools_called": {"tools": len(others), "calls": sum(per_tool[n] for n in others)},
        "turn_types": dict(turns.most_common()),
        "refusal_examples": refusals,
        "warnings": warnings,
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

BUNDLED = ROOT / "data" / "customer_service"


def bundled_tools() -> list[dict]:
    """The bundled agent's 15 tool schemas, normalized as the validator normalizes any."""
    tools, errors = normalize_tools(json.loads((BUNDLED / "tools.json").read_text(encoding="utf-8")))
    if errors:
        raise RuntimeError(f"bundled tools.json: {errors}")
    return tools


def read_records(path: Path, tools: list[dict]) -> list[dict]:
    """The valid conversations of a canonical JSONL file, normalized by the validator (tools attached)."""
    with open(path, "rb") as f:
        return valid_records(f, tools)


def valid_records(lines, tools: list[dict]) -> list[dict]:
    """The valid conversations among `lines` (bytes or text, one JSON object each), normalized by the validator."""
    schemas = Schemas()
    out = []
    for k, raw in enumerate(lines):
        raw = (raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="replace")).rstrip(b"\r\n")
        if k == 0:
            raw = raw.removeprefix(BOM)
        if raw.strip():
            rec, _ = check_line(raw, tools, schemas)
            if rec is not None:
                out.append(rec)
    return out
