"""Public datasets in their own formats, for `make import`: Salesforce xLAM / APIGen rows, NousResearch Hermes
function-calling rows, and Hugging Face datasets in TRL's `messages` + `tools` form (read by `datasets`)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from pipeline.lib.formats_base import Result, _as_tool, _call_items, _Calls, _content_str, _err, _finish, _parse_arguments, _tools_from

# --------------------------------------------------------------------------- xlam (APIGen)

_XLAM_SCALARS = {"str": "string", "string": "string", "int": "integer", "integer": "integer", "float": "number",
                 "number": "number", "bool": "boolean", "boolean": "boolean", "dict": "object", "object": "object",
                 "list": "array", "array": "array", "tuple": "array", "set": "array"}


def xlam_type(text: str) -> dict:
    """A Python-style type of xLAM's tools ("str", "List[int]", "Dict[str, Any]", "Union[int, str]") as JSON
    Schema; a type it does not know (Any, Callable, a class name) constrains nothing."""
    t = text.strip()
    m = re.fullmatch(r"(?i)(optional|list|tuple|set|dict|union)\[(.*)\]", t)
    if m:
        kind, inner = m.group(1).lower(), m.group(2)
        parts = _split_top(inner)
        if kind == "optional":
            return xlam_type(inner)
        if kind == "union":
            opts = [xlam_type(x) for x in parts]
            return {} if any(not o for o in opts) else {"anyOf": opts}
        if kind == "dict":
            return {"type": "object"}
        item = xlam_type(parts[0]) if parts else {}
        return {"type": "array", **({"items": item} if item and kind != "tuple" else {})}
    simple = _XLAM_SCALARS.get(t.lower())
    return {"type": simple} if simple else {}


def _split_top(text: str) -> list[str]:
    """Comma-separated parts of a type's brackets, at the top level only."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [x.strip() for x in parts + [cur] if x.strip()]


def _xlam_tool(entry: Any) -> tuple[dict | None, str | None]:
    """xLAM's {name, description, parameters: {param: {type: "str, optional", description, default}}} as an
    OpenAI tool; a parameter is required unless its type says ", optional" or it has a default."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        return None, "a tool has no name"
    params = entry.get("parameters") or {}
    if isinstance(params, dict) and params.get("type") == "object" and isinstance(params.get("properties"), dict):
        return _as_tool(entry)  # already JSON Schema
    if not isinstance(params, dict):
        return None, f"parameters of {entry['name']!r} is {type(params).__name__}, not an object"
    props, required = {}, []
    for pname, spec in params.items():
        spec = spec if isinstance(spec, dict) else {"type": str(spec)}
        raw_type = str(spec.get("type", ""))
        optional = bool(re.search(r",\s*optional\s*$", raw_type, re.I)) or raw_type.lower().startswith("optional[")
        schema = xlam_type(re.sub(r",\s*optional\s*$", "", raw_type, flags=re.I))
        if isinstance(spec.get("description"), str):
            schema["description"] = spec["description"]
        if "default" in spec and spec["default"] not in ("", None):
            schema["default"] = spec["default"]
        props[str(pname)] = schema
        if not optional and "default" not in spec:  # a default is what the API takes when the call leaves it out
            required.append(str(pname))
    return _as_tool({"name": entry["name"], "description": entry.get("description") or "",
                     "parameters": {"type": "object", "properties": props, "required": required}})


def _xlam_one(rec: Any) -> Result:
    """An xLAM/APIGen row: `query` (the user's request), `tools` and `answers` (JSON strings or lists): one
    user turn and one assistant turn with every answer as a call (parallel when several); no answers is a
    text reply that no tool fits."""
    if not isinstance(rec, dict) or not isinstance(rec.get("query"), str) or "tools" not in rec or "answers" not in rec:
        return None, [_err("not_xlam", "a row needs `query`, `tools` and `answers`", "give each row query, tools and answers")]
    loaded = {}
    for key in ("tools", "answers"):
        value = rec[key]
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else []
            except json.JSONDecodeError as e:
                return None, [_err(f"{key}_invalid", f"`{key}` is not valid JSON: {e}", f"store `{key}` as a JSON list")]
        if not isinstance(value, list):
            return None, [_err(f"{key}_invalid", f"`{key}` is {type(value).__name__}, not a list", f"store `{key}` as a JSON list")]
        loaded[key] = value
    tools, errors = [], []
    for entry in loaded["tools"]:
        tool, problem = _xlam_tool(entry)
        if problem:
            errors.append(_err("tools_invalid", f"tools: {problem}", "give every tool a name and its parameters"))
        elif tool["function"]["name"] not in {t["function"]["name"] for t in tools}:
            tools.append(tool)
    tool_calls = _call_items(loaded["answers"], _Calls(), errors, "answer")
    reply = ({"role": "assistant", "content": None, "tool_calls": tool_calls} if tool_calls else
             {"role": "assistant", "content": str(rec.get("reply") or "None of the available tools can do that.")})
    return _finish([{"role": "user", "content": rec["query"]}, reply], tools, errors)


def import_xlam(records: Iterable[Any]) -> Iterator[Result]:
    """Salesforce xLAM / APIGen rows (`query`, `tools`, `answers`)."""
    for rec in records:
        yield _xlam_one(rec)


# --------------------------------------------------------------------------- hermes (NousResearch function calling)

_HERMES_BLOCK = {tag: re.compile(rf"<{tag}>\s*(.*?)\s*</{tag}>", re.S) for tag in ("tools", "tool_call", "tool_response")}
_HERMES_INSTRUCTION = re.compile(r"(?:Use the following pydantic model json schema|For each function call return).*\Z", re.S)


def _hermes_json(text: str) -> Any:
    """A block's JSON, or the Python literal older revisions of the dataset wrote (single quotes)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import ast

        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None


def _hermes_one(rec: Any) -> Result:
    """A Hermes function-calling row: ShareGPT turns (system, human, gpt, tool) with the tools in `<tools>` in the
    system prompt (or a `tools` field), calls as `<tool_call>` blocks in gpt turns and results as `<tool_response>`
    blocks in tool turns. The markup becomes canonical calls and results; the system prompt keeps its own words."""
    if not isinstance(rec, dict) or not isinstance(rec.get("conversations"), list) or not rec["conversations"]:
        return None, [_err("empty_conversation", "no 'conversations' list", "put the turns in 'conversations'")]
    tools, errors = _tools_from(rec.get("tools"), what="tools") if rec.get("tools") else ([], [])
    messages: list[dict] = []
    calls = _Calls()
    for i, turn in enumerate(rec["conversations"]):
        who = str((turn or {}).get("from", (turn or {}).get("role")) if isinstance(turn, dict) else "").lower()
        value = _content_str(turn.get("value", turn.get("content"))) if isinstance(turn, dict) else ""
        if who == "system":
            block = _HERMES_BLOCK["tools"].search(value)
            if block and not tools:
                found, problems = _tools_from(_hermes_json(block.group(1)), what="<tools> in the system prompt")
                tools, errors = found, errors + problems
            text = _HERMES_INSTRUCTION.sub("", _HERMES_BLOCK["tools"].sub("", value))
            text = re.sub(r"\s*<tools>\s*</tools>\s*|</?tools>", " ", text)
            text = " ".join(text.split())
            if text:
                messages.append({"role": "system", "content": text})
        elif who in ("human", "user"):
            messages.append({"role": "user", "content": value})
        elif who in ("gpt", "assistant"):
            blocks = _HERMES_BLOCK["tool_call"].findall(value)
            text = _HERMES_BLOCK["tool_call"].sub("", value).strip()
            tool_calls = _call_items([_hermes_json(b) for b in blocks], calls, errors, f"turn {i}: <tool_call>")
            msg = {"role": "assistant", "content": text or None}
            if tool_calls:
                msg["tool_calls"] = tool_calls
            elif not text:
                errors.append(_err("empty_reply", f"turn {i}: a gpt turn with neither text nor a call", "drop the turn"))
                continue
            messages.append(msg)
        elif who in ("tool", "function", "observation"):
            results = _HERMES_BLOCK["tool_response"].findall(value) or [value]
            for r in results:
                if not calls.pending:
                    errors.append(_err("orphan_observation", f"turn {i}: a tool result with no open call",
                                       "every <tool_response> answers a <tool_call> before it"))
                    break
                body = _hermes_json(r)
                name = body.get("name") if isinstance(body, dict) else None
                call = next((c for c in calls.pending if c["function"]["name"] == name), calls.pending[0])
                calls.pending.remove(call)
                content = body.get("content", body) if isinstance(body, dict) and "name" in body else (body if body is not None else r)
                messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                                 "content": _content_str(content)})
        else:
            errors.append(_err("role_unknown", f"turn {i} has from={who!r}", "use system, human, gpt or tool"))
    return _finish(messages, tools, errors)


def import_hermes(records: Iterable[Any]) -> Iterator[Result]:
    """NousResearch hermes-function-calling rows (ShareGPT turns with Hermes tool markup in the text)."""
    for rec in records:
        yield _hermes_one(rec)


# --------------------------------------------------------------------------- hf (datasets in TRL's messages + tools form)


def _no_nulls(value: Any) -> Any:
    """A value read back from Arrow without the keys Arrow's shared struct type added as null: a column of dicts
    holds every key any row has, so one tool's parameters gain every other tool's, set to None."""
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_no_nulls(v) for v in value]
    return value


def _hf_one(rec: Any) -> Result:
    """A row of a Hugging Face dataset in TRL's conversational tool-calling form: `messages` (OpenAI chat turns,
    call arguments as objects or JSON strings) and `tools` (a list, or its JSON text)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list) or not rec["messages"]:
        return None, [_err("empty_conversation", "no `messages` column value", "give each row a `messages` list")]
    tools_value = rec.get("tools")
    tools, errors = _tools_from(_no_nulls(tools_value) if not isinstance(tools_value, str) else tools_value, what="tools")
    messages = []
    for k, m in enumerate(rec["messages"]):
        if not isinstance(m, dict):
            return None, [_err("not_object", f"message {k} is {type(m).__name__}", "each message is an object")]
        content = m.get("content")
        out = {**_no_nulls({x: v for x, v in m.items() if x not in ("content", "tool_calls")}), "content": content}
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = (c or {}).get("function") or {}
                args = fn.get("arguments")
                args, problem = _parse_arguments(_no_nulls(args) if isinstance(args, dict) else args, str(fn.get("name")))
                if problem:
                    return None, [problem]
                calls.append({**({"id": c["id"]} if c.get("id") else {}), "type": "function",
                              "function": {"name": fn.get("name"), "arguments": args}})
            out["tool_calls"] = calls
        messages.append(out)
    return _finish(messages, tools, errors)


def import_hf(records: Iterable[Any]) -> Iterator[Result]:
    """Rows of a Hugging Face dataset with `messages` and `tools` columns (read by `load_hf_records`)."""
    for rec in records:
        yield _hf_one(rec)


HF_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow"}


def load_hf_records(path: str | os.PathLike) -> Iterator[tuple[str, Any, list[dict]]]:
    """`(source, row, read_errors)` for every row of a dataset folder saved by `datasets` (`save_to_disk`, every
    split), or of parquet / JSON Lines / arrow files (one file, or every such file under a folder), read by
    `datasets` itself."""
    import datasets

    p = Path(path)
    if p.is_dir() and ((p / "dataset_dict.json").is_file() or (p / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(p))
        splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("train", loaded)]
    else:
        files = [f for f in sorted(p.rglob("*")) if f.suffix in HF_SUFFIXES] if p.is_dir() else [p]
        kinds = {HF_SUFFIXES.get(f.suffix) for f in files}
        if not files or None in kinds or len(kinds) > 1:
            raise ValueError(f"{path}: give a folder saved by `datasets`, or parquet, JSON Lines or arrow files of one kind")
        splits = [(str(p), datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train"))]
    for name, ds in splits:
        for row in ds:
            yield f"{p}:{name}" if name != str(p) else name, row, []
