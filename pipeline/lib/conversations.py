"""The one conversation checker: a canonical JSONL line against its tool schemas, and the tool lists themselves.

The validate stage, the importers, synth, review and the data generator's tests all check a conversation here."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable

from pipeline.lib.common import StageError, rel
from pipeline.lib.parse import acceptable_args
from pipeline.lib.recipe import ROOT

ROLES = {"system", "user", "assistant", "tool"}
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
    "tool_call_id_duplicate": "give the calls that are open at once (not yet answered) each their own id",
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


def _line_tools(obj: dict, dataset_tools: list[dict] | None, messages: list) -> tuple[list[dict] | None, str | None, list[dict]]:
    """The tools a line is checked against, where they came from (the line, the dataset's file, or signatures in
    its system prompt), and the problems of the line's own list."""
    if "tools" in obj and obj["tools"] is not None:
        tools, errs = normalize_tools(obj["tools"])
        return tools, "line", errs
    if dataset_tools is not None:
        return dataset_tools, "dataset", []
    parsed = signature_tools(messages)
    if parsed:
        tools, errs = normalize_tools(parsed)
        return tools, "signatures", errs
    return None, None, []


def _arguments(args, cw: str, name: str) -> tuple[dict | None, dict | None]:
    """A call's arguments as an object (a JSON string is read strictly), or the problem."""
    if isinstance(args, str):
        try:
            args = loads_strict(args) if args.strip() else {}
        except DuplicateKey as e:
            return None, problem("duplicate_key", f"{cw} ({name}) arguments: {e}")
        except (ValueError, RecursionError):
            return None, problem("arguments_not_json", f"{cw} ({name}): arguments string is not JSON (or holds NaN/Infinity)")
    if not isinstance(args, dict):
        return None, problem("arguments_not_json", f"{cw} ({name}): arguments is {type(args).__name__}")
    return args, None


def _schema_problems(validator: Draft202012Validator, args: dict, cw: str, name: str) -> list[dict]:
    """The first few ways `args` breaks the tool's parameters schema (or why the schema cannot be applied)."""
    try:
        found = sorted(validator.iter_errors(args), key=lambda e: list(e.path))[:5]
    except (Unresolvable, RecursionError) as e:  # a "$ref" it does not define, or one to itself
        why = "it refers to itself without end" if isinstance(e, RecursionError) else str(e)[:200]
        return [problem("tools_invalid", f"{cw} ({name}): the tool's parameters schema cannot be applied: {why}")]
    return [problem("arguments_schema", f"{cw} ({name}) {'.'.join(str(p) for p in err.path) or '(arguments)'}: {err.message[:200]}")
            for err in found]


@dataclass
class _Calls:
    """The calls of a conversation so far: those not yet answered, every id used, how many were made."""
    pending: dict[str, str] = field(default_factory=dict)  # call id -> tool name
    seen: set[str] = field(default_factory=set)
    count: int = 0
    reused: int = 0  # ids used again after their earlier call was answered


def _calls(calls: list, where: str, tools: list[dict] | None, by_name: dict, source: str | None, schemas: Schemas,
           state: _Calls, errors: list[dict]) -> list[dict]:
    """An assistant turn's calls, normalized (ids given where missing); each problem goes to `errors`."""
    norm_calls = []
    seen_ids, call_counter, pending = state.seen, state.count, state.pending
    for k, c in enumerate(calls):
        cw = f"{where}.tool_calls[{k}]"
        fn = c.get("function", c) if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn.get("name"):
            errors.append(problem("tool_call_malformed", f"{cw} has no function name"))
            continue
        name = fn["name"]
        args, bad = _arguments(fn.get("arguments", {}), cw, name)
        if bad:
            errors.append(bad)
            continue
        if tools is None:
            errors.append(problem("no_tools", f"{cw} calls {name!r}"))
        elif name not in by_name:
            known = ", ".join(sorted(by_name)[:20])
            errors.append(problem("tool_undeclared", f"{cw} calls {name!r}; declared ({source}): {known}"))
        else:
            errors += _schema_problems(schemas.validator(by_name[name]["parameters"]), args, cw, name)
        call_id = c.get("id") if isinstance(c, dict) else None
        if call_id is None:
            call_id = f"call_{call_counter}"
        call_id = str(call_id)
        call_counter += 1
        if call_id in pending:  # two open calls with one id: which result answers which is ambiguous
            errors.append(problem("tool_call_id_duplicate", f"{cw}: id {call_id!r} is already used by a call not yet answered"))
        elif call_id in seen_ids:  # reused after its earlier call was answered: the pairing is unambiguous
            state.reused += 1
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
    state.count = call_counter
    return norm_calls


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

    tools, source, errors = _line_tools(obj, dataset_tools, messages)
    by_name = {t["function"]["name"]: t["function"] for t in tools or []}

    out_msgs: list[dict] = []
    state = _Calls()
    pending = state.pending  # call id -> tool name, not yet answered
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
            norm_calls = _calls(calls, where, tools, by_name, source, schemas, state, errors)
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
    if state.reused:
        record["reused_call_ids"] = state.reused  # counted by validate; not written to its outputs
    return record, []


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


def raw_field(raw: bytes) -> dict:
    """The rejected line as text for rejects.jsonl: whole up to RAW_KEPT characters, else its start and its size."""
    text = raw[: RAW_KEPT * 4].decode("utf-8", errors="replace")
    if len(raw) <= RAW_KEPT and len(text) <= RAW_KEPT:
        return {"raw": text}
    return {"raw": text[:RAW_KEPT], "raw_truncated": True, "raw_bytes": len(raw)}


def reject_record(r: dict, err: dict) -> dict:
    raw = {"messages": r["messages"], "tools": r["tools"]}
    return {**r["source"], "raw": json.dumps(raw, ensure_ascii=False), "errors": [err]}


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
