"""What every importer of `pipeline.lib.formats` shares: its result and error shapes, tool lists and arguments
read leniently, call ids, and the check of a converted record with the validator's own checker."""

from __future__ import annotations

import json
from typing import Any

from pipeline.lib.conversations import Schemas, check_line

Result = tuple[dict | None, list[dict]]
_SCHEMAS = Schemas()  # the checker's compiled tool schemas, shared by every record converted


def _err(code: str, message: str, fix: str) -> dict:
    return {"code": code, "message": message, "fix": fix}


# --------------------------------------------------------------------------- shared helpers


def _as_tool(entry: Any) -> tuple[dict | None, str | None]:
    """Normalise a tool/function declaration to ``{"type": "function", "function": {...}}``."""
    if not isinstance(entry, dict):
        return None, f"tool entry is {type(entry).__name__}, not an object"
    fn = entry["function"] if entry.get("type") == "function" and isinstance(entry.get("function"), dict) else entry
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        return None, "tool entry has no name"
    params = fn.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        return None, f"parameters of {name!r} is {type(params).__name__}, not an object"
    out = {"name": name, "description": fn.get("description") or "", "parameters": params}
    if not isinstance(out["description"], str):
        out["description"] = json.dumps(out["description"], ensure_ascii=False)
    return {"type": "function", "function": out}, None


def _tools_from(value: Any, *, what: str) -> tuple[list[dict], list[dict]]:
    if value is None or value == "":
        return [], []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            return [], [_err("tools_invalid", f"{what} is not valid JSON: {e}", "store the tool list as a JSON array of function schemas")]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return [], [_err("tools_invalid", f"{what} is {type(value).__name__}, not a list", "store the tool list as a JSON array")]
    tools, errors, seen = [], [], set()
    for entry in value:
        tool, problem = _as_tool(entry)
        if problem:
            errors.append(_err("tools_invalid", f"{what}: {problem}", "give every tool a name and an object 'parameters'"))
            continue
        name = tool["function"]["name"]
        if name in seen:
            continue  # exact re-declarations are common; keep the first
        seen.add(name)
        tools.append(tool)
    return tools, errors


def _parse_arguments(args: Any, name: str) -> tuple[dict | None, dict | None]:
    if args is None or args == "":
        return {}, None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError as e:
            return None, _err("arguments_not_json", f"arguments of {name!r} are not valid JSON: {e}", "make arguments a JSON object")
    if not isinstance(args, dict):
        return None, _err("arguments_not_json", f"arguments of {name!r} are {type(args).__name__}, not an object", "make arguments a JSON object")
    return args, None


def _content_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class _Calls:
    """Generates call ids and tracks calls awaiting a result."""

    def __init__(self) -> None:
        self.n = 0
        self.pending: list[dict] = []  # tool_call dicts, oldest first

    def new(self, name: str, arguments: dict) -> dict:
        call = {"id": f"call_{self.n}", "type": "function", "function": {"name": name, "arguments": arguments}}
        self.n += 1
        self.pending.append(call)
        return call


# --------------------------------------------------------------------------- validation


def validate_canonical(record: Any) -> list[dict]:
    """Every problem the validate stage would find in a converted record (empty when it would accept it):
    importers check with the one conversation checker, so what they write is what training accepts."""
    try:
        raw = json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as e:
        return [_err("json", f"{e}: JSON has no NaN or Infinity", "the source record holds a number JSON cannot write")]
    except (TypeError, RecursionError) as e:
        return [_err("invalid_canonical", str(e)[:200], "this is an importer bug or a malformed source record")]
    except UnicodeEncodeError as e:
        return [_err("surrogate", str(e)[:200], "the source text holds half a surrogate pair")]
    _, errors = check_line(raw, None, _SCHEMAS)
    return errors


def _finish(messages: list[dict], tools: list[dict], errors: list[dict]) -> Result:
    if errors:
        return None, errors
    record = {"messages": messages, "tools": tools}
    problems = validate_canonical(record)
    return (None, problems) if problems else (record, [])


def _call_items(items: list, calls: "_Calls", errors: list[dict], where: str) -> list[dict]:
    """Calls from `{name, arguments}` objects (arguments an object or its JSON text), ids from `calls`; each
    malformed item goes to `errors`."""
    out = []
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            errors.append(_err("tool_call_malformed", f"{where} {k} is not a {{name, arguments}} object",
                               'write {"name": ..., "arguments": {...}}'))
            continue
        args, problem = _parse_arguments(item.get("arguments"), item["name"])
        if problem:
            errors.append(problem)
            continue
        out.append(calls.new(item["name"], args))
    return out
