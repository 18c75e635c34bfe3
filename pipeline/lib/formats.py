"""Importers from other people's tool-calling dataset formats into tooltune's canonical form.

Canonical record (one JSON object per line)::

    {"messages": [...OpenAI chat messages...], "tools": [{"type": "function", "function": {...}}]}

Assistant tool calls are ``{"role": "assistant", "content": None, "tool_calls": [{"id": "call_0",
"type": "function", "function": {"name": ..., "arguments": {...dict...}}}]}`` and tool results are
``{"role": "tool", "tool_call_id": "call_0", "name": ..., "content": str}``.

Command line::

    python -m pipeline.commands.importer sharegpt|glaive        IN OUT
    python -m pipeline.commands.importer openai-legacy|toolbench IN OUT
    python -m pipeline.commands.importer bfcl QUESTIONS OUT [--answers ANSWERS]
    python -m pipeline.commands.importer openai-log REQUESTS OUT

IN may be a ``.json`` file (a list of records or one record), a JSON Lines file (any
extension) or a directory (every ``*.json``/``*.jsonl`` under it, sorted). OUT is written
atomically. Records that cannot be converted go to ``OUT.rejects.jsonl`` as
``{"source": IN, "index": i, "raw": <original>, "errors": [{"code", "message", "fix"}]}``
(plus ``"file"`` when IN is a directory); nothing is dropped silently.

Format notes
------------
sharegpt / glaive (LLaMA-Factory): ``conversations: [{from, value}]`` with ``human``,
``gpt``, ``function_call`` (JSON ``{"name", "arguments"}``, or a list of them for parallel
calls), ``observation`` and optionally ``system``; ``tools`` is a JSON string (or list);
``system`` a string. ``role``/``content`` keys are accepted too. Call ids are generated
(``call_0``, ``call_1``, ... per conversation); each observation answers the oldest
unanswered call.

openai-legacy / toolbench: ``{"messages": [...], "functions": [...]}`` (or ``tools``), with
assistant ``function_call: {"name", "arguments": str}`` and ``role: "function"`` results.
ToolBench answer files (``answer/G*_answer/*.json``) are recognised by their
``answer_generation`` key: the trajectory is the longest list in
``answer_generation.train_messages`` (the others are its prefixes) and the function list is
``answer_generation.function``. ToolBench specifics:

- a ``Finish`` call with ``return_type: "give_answer"`` becomes a plain assistant text answer
  containing ``final_answer`` (an assistant text turn directly before it is replaced by it,
  since ToolBench shows only the final answer to the user), and ``Finish`` is removed from the
  tool list;
- trajectories ending in ``Finish(return_type="give_up_and_restart")`` are rejected
  (``toolbench_give_up``); answer files without ``train_messages`` (ToolBench marks them
  ``valid_data: false``) are rejected (``toolbench_no_trajectory``);
- the "Thought" text that ToolBench attaches to a ``function_call`` message is dropped
  (canonical tool-call turns have ``content: null``);
- the DFS "This is not the first time you try this task..." user turns are kept as they are;
- non-standard schema keys are tidied: ``optional`` is dropped (its names are made
  non-required) and ``example_value`` becomes ``examples: [value]``.

bfcl: questions ``{"id", "question": [[{"role", "content"}, ...]], "function": [...]}``
(a single turn; ``question`` may also be a plain string) and answers
``{"id", "ground_truth": [{"func_name": {"param": [acceptable values]}}]}``. BFCL types are
mapped to JSON Schema recursively (dict->object, float->number, tuple->array, any->no type
constraint). Each ground-truth entry becomes one tool call in a single assistant turn (the
last turn of the record; its calls have no results). For each parameter the first
acceptable value is used; if that first option is ``""`` ("may be omitted") the parameter
is left out (dict arguments, whose values are again lists of options, are resolved the
same way). Every acceptable form is kept too, on the call as ``acceptable``
(``{"param": [acceptable values]}``, ``""`` meaning it may be left out): training uses the
chosen ``arguments``, the eval's argument metric accepts any acceptable form. Names are kept
as they are, dots included. Questions without ground truth are rejected (``bfcl_no_answer``).

Every converted record is checked with :func:`validate_canonical`; a failure is a reject.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from pipeline.lib.common import write_jsonl_atomic
from pipeline.lib.conversations import Schemas, check_line

__all__ = [
    "FORMATS",
    "import_sharegpt",
    "import_openai_legacy",
    "import_bfcl",
    "import_openai_log",
    "bfcl_types_to_json_schema",
    "validate_canonical",
    "load_records",
    "load_bfcl_answers",
    "convert",
]

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


# --------------------------------------------------------------------------- sharegpt


_SG_ROLE = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant",
    "function_call": "function_call", "observation": "observation",
    "function": "observation", "tool": "observation",
    "system": "system",
}


def _sharegpt_one(rec: Any) -> Result:
    if not isinstance(rec, dict):
        return None, [_err("not_object", f"record is {type(rec).__name__}", "each record must be a JSON object")]
    turns = rec.get("conversations", rec.get("messages"))
    if not isinstance(turns, list) or not turns:
        return None, [_err("empty_conversation", "no 'conversations' list", "put the turns in 'conversations'")]
    tools, errors = _tools_from(rec.get("tools"), what="tools")
    declared = {t["function"]["name"] for t in tools}
    messages: list[dict] = []
    if isinstance(rec.get("system"), str) and rec["system"].strip():
        messages.append({"role": "system", "content": rec["system"]})
    calls = _Calls()
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            errors.append(_err("not_object", f"turn {i} is not an object", "each turn must be {from, value}"))
            continue
        who = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        role = _SG_ROLE.get(str(who).lower())
        if role is None:
            errors.append(_err("role_unknown", f"turn {i} has from={who!r}", "use human, gpt, function_call, observation or system"))
            continue
        if role != "observation" and calls.pending:
            errors.append(_err("call_unanswered", f"turn {i} ({who}) follows a function_call without an observation",
                               "add an observation turn after each function_call"))
            calls.pending.clear()
        if role in ("system", "user", "assistant"):
            if role == "system" and messages:
                errors.append(_err("system_not_first", f"turn {i} is a system turn after the start", "move it to the 'system' field"))
                continue
            messages.append({"role": role, "content": _content_str(value)})
        elif role == "function_call":
            payload = value
            if isinstance(payload, str):
                try:
                    payload = json.loads(payload)
                except json.JSONDecodeError as e:
                    errors.append(_err("tool_call_malformed", f"turn {i}: function_call value is not JSON: {e}",
                                       'write the value as {"name": ..., "arguments": {...}}'))
                    continue
            items = payload if isinstance(payload, list) else [payload]
            tool_calls = []
            for item in items:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    errors.append(_err("tool_call_malformed", f"turn {i}: function_call has no name",
                                       'write the value as {"name": ..., "arguments": {...}}'))
                    continue
                args, problem = _parse_arguments(item.get("arguments", item.get("parameters")), item["name"])
                if problem:
                    errors.append(problem)
                    continue
                if item["name"] not in declared:
                    errors.append(_err("tool_undeclared", f"turn {i} calls {item['name']!r}, which is not in tools",
                                       "declare the function in 'tools' or drop the record"))
                tool_calls.append(calls.new(item["name"], args))
            if tool_calls:
                messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
        else:  # observation
            if not calls.pending:
                errors.append(_err("orphan_observation", f"turn {i} is an observation with no function_call before it",
                                   "the source wrote the call as prose in a gpt turn; fix the record or drop it"))
                continue
            call = calls.pending.pop(0)
            messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                             "content": _content_str(value)})
    return _finish(messages, tools, errors)


def import_sharegpt(records: Iterable[Any]) -> Iterator[Result]:
    """Convert LLaMA-Factory/Glaive ShareGPT records; yields ``(canonical | None, errors)`` per record."""
    for rec in records:
        try:
            yield _sharegpt_one(rec)
        except Exception as e:  # a converter bug must not lose the record
            yield None, [_err("internal_error", f"{type(e).__name__}: {e}", "report this as an importer bug")]


# --------------------------------------------------------------------------- openai legacy / toolbench


def _tidy_schema(schema: Any) -> Any:
    """Drop ToolBench's non-standard keys (``optional``, ``example_value``) recursively."""
    if isinstance(schema, list):
        return [_tidy_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k == "optional" and isinstance(v, list):
            continue
        if k == "example_value":
            out.setdefault("examples", [v])
            continue
        if k in ("properties", "patternProperties", "$defs", "definitions") and isinstance(v, dict):
            out[k] = {pk: _tidy_schema(pv) for pk, pv in v.items()}
        elif isinstance(v, (dict, list)) and k not in ("enum", "default", "examples", "const", "required"):
            out[k] = _tidy_schema(v)
        else:
            out[k] = v
    if isinstance(schema.get("optional"), list) and isinstance(out.get("required"), list):
        optional = set(x for x in schema["optional"] if isinstance(x, str))
        out["required"] = [r for r in out["required"] if r not in optional]
    return out


QUERY_ONLY = "toolbench_query_only"  # not a conversation at all: left out of the acceptance share


def _legacy_one(rec: Any) -> Result:
    if not isinstance(rec, dict):
        return None, [_err("not_object", f"record is {type(rec).__name__}", "each record must be a JSON object")]
    toolbench = isinstance(rec.get("answer_generation"), dict)
    if toolbench:
        ag = rec["answer_generation"]
        trajectories = [t for t in (ag.get("train_messages") or []) if isinstance(t, list)]
        if not trajectories:
            return None, [_err("toolbench_no_trajectory",
                               f"answer file has no train_messages (valid_data={ag.get('valid_data')!r}, "
                               f"finish_type={ag.get('finish_type')!r}, win={rec.get('win')!r})",
                               "ToolBench marked this search invalid; nothing to train on, drop it")]
        raw_messages = max(trajectories, key=len)
        raw_tools = ag.get("function")
    else:
        raw_messages = rec.get("messages", rec.get("conversations"))
        raw_tools = rec.get("tools") if rec.get("tools") is not None else rec.get("functions")
        if not isinstance(raw_messages, list) or not raw_messages:
            if "query" in rec and ("api_list" in rec or "query_id" in rec):
                return None, [_err(QUERY_ONLY, "a ToolBench query (instruction/*.json) has no trajectory, only the question",
                                   "import ToolBench's answer/ folder: the searches that answer these queries")]
            return None, [_err("unrecognized_record", f"no 'messages' list (keys: {sorted(rec)[:10]})",
                               "expected {messages, functions|tools} or a ToolBench answer file")]
    tools, errors = _tools_from(raw_tools, what="functions")
    for t in tools:
        t["function"]["parameters"] = _tidy_schema(t["function"]["parameters"])
    declared = {t["function"]["name"] for t in tools}
    messages: list[dict] = []
    calls = _Calls()
    id_map: dict[str, dict] = {}
    used_finish = False
    for i, m in enumerate(raw_messages):
        if not isinstance(m, dict):
            errors.append(_err("not_object", f"message {i} is not an object", "each message must be an object"))
            continue
        role = m.get("role")
        if role not in ("tool", "function"):
            calls.pending.clear()  # unanswered calls are reported by validate_canonical
        if role in ("system", "user"):
            messages.append({"role": role, "content": _content_str(m.get("content"))})
        elif role == "assistant":
            raw_calls = []
            if isinstance(m.get("function_call"), dict):
                raw_calls.append((None, m["function_call"]))
            for tc in m.get("tool_calls") or []:
                if isinstance(tc, dict) and isinstance(tc.get("function"), dict):
                    raw_calls.append((tc.get("id"), tc["function"]))
            if not raw_calls:
                messages.append({"role": "assistant", "content": _content_str(m.get("content"))})
                continue
            tool_calls = []
            for old_id, fc in raw_calls:
                name = fc.get("name")
                if not isinstance(name, str) or not name:
                    errors.append(_err("tool_call_malformed", f"message {i}: function_call has no name", "give every call a name"))
                    continue
                args, problem = _parse_arguments(fc.get("arguments"), name)
                if problem:
                    errors.append(problem)
                    continue
                if name == "Finish" and "return_type" in args:
                    rtype = args.get("return_type")
                    if rtype == "give_answer" and isinstance(args.get("final_answer"), str):
                        if messages and messages[-1]["role"] == "assistant" and "tool_calls" not in messages[-1]:
                            messages.pop()  # the Finish answer supersedes a preceding text turn
                        messages.append({"role": "assistant", "content": args["final_answer"]})
                        used_finish = True
                    elif rtype == "give_up_and_restart":
                        errors.append(_err("toolbench_give_up", f"message {i}: the trajectory ends with Finish(give_up_and_restart)",
                                           "a failed search has no answer to learn from; drop it"))
                    else:
                        errors.append(_err("toolbench_bad_finish", f"message {i}: Finish with return_type={rtype!r} and no final_answer",
                                           "Finish(give_answer) needs a string final_answer"))
                    continue
                if name not in declared:
                    errors.append(_err("tool_undeclared", f"message {i} calls {name!r}, which is not among the record's functions",
                                       "the model called a tool that was not offered; drop the record or declare the function"))
                call = calls.new(name, args)
                if old_id:
                    id_map[old_id] = call
                tool_calls.append(call)
            if tool_calls:
                messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
        elif role in ("function", "tool"):
            call = None
            if role == "tool" and m.get("tool_call_id") in id_map:
                call = id_map[m["tool_call_id"]]
                if call in calls.pending:
                    calls.pending.remove(call)
                else:
                    call = None
            elif calls.pending:
                call = calls.pending.pop(0)
            if call is None:
                errors.append(_err("tool_result_orphan", f"message {i} ({role}) has no pending call to answer",
                                   "each function result must follow the assistant call it answers"))
                continue
            if m.get("name") not in (None, call["function"]["name"]):
                errors.append(_err("tool_result_mismatch",
                                   f"message {i}: result from {m.get('name')!r} answers a call to {call['function']['name']!r}",
                                   "results must come in the order of the calls"))
                continue
            messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                             "content": _content_str(m.get("content"))})
        else:
            errors.append(_err("role_unknown", f"message {i} has role {role!r}", "use system, user, assistant, function or tool"))
    if used_finish or toolbench:
        tools = [t for t in tools if t["function"]["name"] != "Finish"]
    return _finish(messages, tools, errors)


def import_openai_legacy(records: Iterable[Any]) -> Iterator[Result]:
    """Convert OpenAI legacy ``function_call`` records and ToolBench answer files."""
    for rec in records:
        try:
            yield _legacy_one(rec)
        except Exception as e:
            yield None, [_err("internal_error", f"{type(e).__name__}: {e}", "report this as an importer bug")]


# --------------------------------------------------------------------------- bfcl

_BFCL_TYPES = {"dict": "object", "float": "number", "tuple": "array", "double": "number",
               "int": "integer", "str": "string", "bool": "boolean", "list": "array", "long": "integer"}


def bfcl_types_to_json_schema(schema: Any) -> Any:
    """Map BFCL's parameter types to JSON Schema, recursively (returns a new object)."""
    if isinstance(schema, list):
        return [bfcl_types_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict = {}
    for k, v in schema.items():
        if k == "type":
            if isinstance(v, str):
                t = v.lower()
                if t == "any":
                    continue
                out["type"] = _BFCL_TYPES.get(t, t)
            elif isinstance(v, list):
                types = [_BFCL_TYPES.get(str(x).lower(), str(x).lower()) for x in v]
                if "any" not in types:
                    out["type"] = types
            continue
        if k in ("properties", "patternProperties", "$defs", "definitions") and isinstance(v, dict):
            out[k] = {pk: bfcl_types_to_json_schema(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "anyOf", "oneOf", "allOf", "not", "prefixItems") and isinstance(v, (dict, list)):
            out[k] = bfcl_types_to_json_schema(v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _bfcl_messages(question: Any) -> tuple[list[dict] | None, dict | None]:
    if isinstance(question, str):
        return [{"role": "user", "content": question}], None
    if not isinstance(question, list) or not question:
        return None, _err("bfcl_bad_question", "question is empty or not a list", 'expected [[{"role": "user", "content": ...}]]')
    turns = question
    if all(isinstance(t, list) for t in turns):
        if len(turns) != 1:
            return None, _err("bfcl_multi_turn", f"question has {len(turns)} turns", "only single-turn BFCL categories are supported")
        turns = turns[0]
    msgs = []
    for t in turns:
        if not isinstance(t, dict) or t.get("role") not in ("system", "user", "assistant") or not isinstance(t.get("content"), str):
            return None, _err("bfcl_bad_question", f"bad question message {str(t)[:100]}", "each message needs a role and string content")
        msgs.append({"role": t["role"], "content": t["content"]})
    return msgs, None


def _bfcl_pick_args(params: dict) -> dict:
    """Choose one value per parameter from BFCL's lists of acceptable values.

    The first option is used; if it is ``""`` (may be omitted) the parameter is left out.
    Dict values (and dicts inside list values) whose values are all option lists are
    resolved the same way, as BFCL nests acceptable-value lists inside dict arguments.
    """
    args = {}
    for pname, options in params.items():
        if not isinstance(options, list):
            options = [options]
        if not options or options[0] == "":
            continue
        args[pname] = _bfcl_resolve(copy.deepcopy(options[0]))
    return args


def _bfcl_resolve(value: Any) -> Any:
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        return _bfcl_pick_args(value)
    if isinstance(value, list):
        return [_bfcl_resolve(v) if isinstance(v, dict) else v for v in value]
    return value


def _bfcl_one(rec: Any, answers: Mapping[str, Any]) -> Result:
    if not isinstance(rec, dict):
        return None, [_err("not_object", f"record is {type(rec).__name__}", "each record must be a JSON object")]
    rid = rec.get("id")
    messages, problem = _bfcl_messages(rec.get("question"))
    if problem:
        return None, [problem]
    funcs = rec.get("function")
    tools, errors = _tools_from(funcs if isinstance(funcs, list) else [funcs] if isinstance(funcs, dict) else funcs, what="function")
    for t in tools:
        params = bfcl_types_to_json_schema(t["function"]["parameters"])
        params.setdefault("type", "object")
        t["function"]["parameters"] = params
    truth = answers.get(rid) if isinstance(rid, str) else None
    if not truth:
        errors.append(_err("bfcl_no_answer", f"no ground truth for id {rid!r}",
                           "pass the matching answer file with --answers (irrelevance questions have none)"))
        return None, errors
    if not isinstance(truth, list):
        truth = [truth]
    calls = _Calls()
    tool_calls = []
    for entry in truth:
        if not isinstance(entry, dict) or len(entry) != 1:
            errors.append(_err("bfcl_bad_answer", f"ground truth entry {str(entry)[:100]} is not {{func_name: {{...}}}}",
                               "one function per ground-truth entry"))
            continue
        (name, params), = entry.items()
        if not isinstance(params, dict):
            errors.append(_err("bfcl_bad_answer", f"ground truth for {name!r} is not an object", "map parameters to lists of acceptable values"))
            continue
        # one value per argument to train on, and every acceptable form for the eval to score against
        tool_calls.append({**calls.new(name, _bfcl_pick_args(params)),
                           "acceptable": {k: v if isinstance(v, list) else [v] for k, v in params.items()}})
    if tool_calls:
        messages.append({"role": "assistant", "content": None, "tool_calls": tool_calls})
    return _finish(messages, tools, errors)


def import_bfcl(records: Iterable[Any], answers: Mapping[str, Any] | Iterable[Any] | None = None) -> Iterator[Result]:
    """Convert BFCL question records; ``answers`` maps id -> ground_truth (or is an iterable of answer records)."""
    if answers is None:
        answers = {}
    elif not isinstance(answers, Mapping):
        answers = {a["id"]: a.get("ground_truth") for a in answers if isinstance(a, dict) and "id" in a}
    for rec in records:
        try:
            yield _bfcl_one(rec, answers)
        except Exception as e:
            yield None, [_err("internal_error", f"{type(e).__name__}: {e}", "report this as an importer bug")]


# --------------------------------------------------------------------------- files


def _iter_file(path: Path) -> Iterator[tuple[Any, list[dict]]]:
    """Yield ``(record, errors)`` for each record in a .json (list/object) or JSON Lines file."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
        is_json = False
    else:
        is_json = True
    if is_json:
        if isinstance(whole, list):
            for rec in whole:
                yield rec, []
        else:
            yield whole, []
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), []
        except json.JSONDecodeError as e:
            yield line, [_err("json", f"{path.name} line {n}: {e}", "fix or remove the line")]


def load_records(path: str | os.PathLike) -> Iterator[tuple[str, Any, list[dict]]]:
    """Yield ``(file, record, read_errors)`` from a file or every *.json/*.jsonl under a directory."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in (".json", ".jsonl"))
    else:
        files = [p]
    for f in files:
        for rec, errs in _iter_file(f):
            yield str(f), rec, errs


def load_bfcl_answers(path: str | os.PathLike) -> dict[str, Any]:
    """id -> ground_truth from a BFCL answer file."""
    out = {}
    for _, rec, errs in load_records(path):
        if not errs and isinstance(rec, dict) and "id" in rec:
            out[rec["id"]] = rec.get("ground_truth")
    return out


# --------------------------------------------------------------------------- openai-log

# What a logged reply gets wrong that a correction fixes: the conversation is kept whole beside the problem.
FIXABLE = {"tool_undeclared", "arguments_schema"}
MARKED_WRONG = {"wrong", "bad", "incorrect", "down", "thumbs_down", "rejected"}


def _log_message(m: Any, k: int) -> tuple[dict | None, dict | None]:
    """One logged chat message in the canonical form (call arguments parsed from their JSON strings)."""
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
        return None, _err("invalid_message", f"message {k} has no known role", "log the request's messages as sent")
    out = {"role": m["role"], "content": m.get("content")}
    if m["role"] == "assistant" and m.get("tool_calls"):
        calls = []
        for c in m["tool_calls"]:
            fn = (c or {}).get("function") or {}
            args, problem = _parse_arguments(fn.get("arguments"), str(fn.get("name")))
            if problem:
                return None, problem
            calls.append({"id": c.get("id") or f"call_{len(calls)}", "type": "function",
                          "function": {"name": fn.get("name"), "arguments": args}})
        out.update(content=m.get("content") or None, tool_calls=calls)
    elif m["role"] == "tool":
        out.update(tool_call_id=m.get("tool_call_id"), content=_content_str(m.get("content")))
        if m.get("name"):
            out["name"] = m["name"]
    elif not isinstance(out["content"], str):
        out["content"] = _content_str(out["content"])
    return out, None


def _openai_log_one(rec: Any) -> Result:
    """A logged chat-completion exchange: `request` (messages, tools) and `response` (a completion or its message),
    with an optional verdict (`label`: "wrong", `correct`: false) and `correction` (the right assistant message)."""
    if not isinstance(rec, dict):
        return None, [_err("not_object", f"record is {type(rec).__name__}", "log one JSON object per exchange")]
    req = rec.get("request") if isinstance(rec.get("request"), dict) else rec
    resp = rec.get("response")
    if isinstance(resp, dict) and resp.get("choices"):
        resp = (resp["choices"][0] or {}).get("message")
    elif isinstance(resp, dict) and isinstance(resp.get("message"), dict):
        resp = resp["message"]
    final = rec.get("correction") or resp
    if not isinstance(req.get("messages"), list) or not isinstance(final, dict):
        return None, [_err("not_a_log", "no request messages and response message", "log {\"request\": {...}, \"response\": {...}}")]
    tools, errors = _tools_from(req.get("tools") or req.get("functions"), what="request tools")
    messages = []
    for k, m in enumerate([*req["messages"], {**final, "role": "assistant"}]):
        msg, problem = _log_message(m, k)
        if problem:
            return None, [problem]
        messages.append(msg)
    if errors:
        return None, errors
    record = {"messages": messages, "tools": tools}
    structural = validate_canonical(record)
    if any(e["code"] not in FIXABLE for e in structural):  # a call to an unknown tool or with wrong arguments: kept whole
        return None, [e for e in structural if e["code"] not in FIXABLE]
    verdict = str(rec.get("label") or rec.get("feedback") or "").lower()
    wrong = (verdict in MARKED_WRONG or rec.get("correct") is False) and not rec.get("correction")
    problems = []
    if wrong:
        problems.append(_err("marked_wrong", "the reply was marked wrong in production",
                             "write the right assistant message as `correction`, or fix the conversation and keep it"))
    # the checker's own findings on the calls, kept for review under the names a log's reviewer reads
    review = {"tool_undeclared": ("unknown_tool", "correct the call to a listed tool"),
              "arguments_schema": ("call_schema", "correct the call's arguments")}
    problems += [_err(review[e["code"]][0], e["message"], review[e["code"]][1]) for e in structural]
    return record, problems


def import_openai_log(records: Iterable[Any]) -> Iterator[Result]:
    """Logged OpenAI chat completions with tools: a valid exchange is a conversation; a call that fails its schema,
    names an unknown tool, or was marked wrong goes to the rejects (review) file with the conversation, to be fixed.
    A session logged as growing requests (each exchange the start of a later one, same tools) is one conversation:
    the longest; the exchanges it holds are skipped as `merged_into_session`, naming it."""
    results = [_openai_log_one(rec) for rec in records]
    holder = _session_prefixes(results)
    for i, (record, problems) in enumerate(results):
        j = holder.get(_digest(record)) if record is not None and not problems else None
        if j is not None and j != i:
            yield None, [_err("merged_into_session", f"this exchange is the start of record {j} of the same session",
                              "nothing to do: it is trained once, inside that record's conversation")]
        else:
            yield record, problems


def _digest(record: dict, n: int | None = None) -> str:
    """A key of a conversation's tools and its first `n` messages (all by default)."""
    import hashlib

    msgs = record["messages"] if n is None else record["messages"][:n]
    return hashlib.sha256(json.dumps([record["tools"], msgs], sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _session_prefixes(results: list[Result]) -> dict[str, int]:
    """Each strict prefix (ending with an assistant turn) of a clean converted exchange -> the index of the longest
    exchange that holds it."""
    holder: dict[str, tuple[int, int]] = {}  # digest -> (length of the holding conversation, its index)
    for i, (record, problems) in enumerate(results):
        if record is None or problems:
            continue
        msgs = record["messages"]
        for n in range(1, len(msgs)):
            if msgs[n - 1]["role"] == "assistant":
                key = _digest(record, n)
                if holder.get(key, (0, -1))[0] < len(msgs):
                    holder[key] = (len(msgs), i)
    return {k: i for k, (_, i) in holder.items()}


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
    calls = _Calls()
    tool_calls = []
    for k, a in enumerate(loaded["answers"]):
        if not isinstance(a, dict) or not isinstance(a.get("name"), str):
            errors.append(_err("tool_call_malformed", f"answer {k} has no name", 'write {"name": ..., "arguments": {...}}'))
            continue
        args, problem = _parse_arguments(a.get("arguments"), a["name"])
        if problem:
            errors.append(problem)
            continue
        tool_calls.append(calls.new(a["name"], args))
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
            tool_calls = []
            for k, b in enumerate(blocks):
                c = _hermes_json(b)
                if not isinstance(c, dict) or not isinstance(c.get("name"), str):
                    errors.append(_err("tool_call_malformed", f"turn {i}: <tool_call> {k} is not a {{name, arguments}} object",
                                       'write {"name": ..., "arguments": {...}} inside <tool_call>'))
                    continue
                args, problem = _parse_arguments(c.get("arguments"), c["name"])
                if problem:
                    errors.append(problem)
                    continue
                tool_calls.append(calls.new(c["name"], args))
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


FORMATS: dict[str, Callable[..., Iterator[Result]]] = {
    "hf": import_hf,
    "xlam": import_xlam,
    "hermes": import_hermes,
    "sharegpt": import_sharegpt,
    "glaive": import_sharegpt,
    "openai-legacy": import_openai_legacy,
    "toolbench": import_openai_legacy,
    "bfcl": import_bfcl,
    "openai-log": import_openai_log,
}



def convert(fmt: str, in_path: str | os.PathLike, out_path: str | os.PathLike,
            answers_path: str | os.PathLike | None = None) -> dict:
    """Convert ``in_path`` (format ``fmt``) to canonical JSONL at ``out_path``.

    Rejects go to ``out_path + ".rejects.jsonl"`` (removed when there are none).
    Returns a summary: format, source, output, rejects_path, read, written, skipped, skip_reasons.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
    if not Path(in_path).exists():
        raise FileNotFoundError(str(in_path))
    source = str(in_path)
    is_dir = Path(in_path).is_dir()
    loaded = list(load_hf_records(in_path) if fmt == "hf" else load_records(in_path))
    raws = [rec for _, rec, _ in loaded]
    if fmt == "bfcl":
        answers = load_bfcl_answers(answers_path) if answers_path else {}
        results = import_bfcl(raws, answers)
    else:
        results = FORMATS[fmt](raws)
    written: list[dict] = []
    rejects: list[dict] = []
    reasons: Counter = Counter()
    for i, ((file, raw, read_errs), (canon, errs)) in enumerate(zip(loaded, results)):
        errs = read_errs or errs
        if canon is not None and not errs:
            written.append(canon)
            continue
        if not errs:
            errs = [_err("internal_error", "converter returned nothing", "report this as an importer bug")]
        row = {"source": source, "index": i, "raw": raw, "errors": errs}
        if canon is not None:  # converted, but wrong (a logged call that failed): kept whole, to be fixed
            row["conversation"] = canon
        if is_dir:
            row["file"] = file
        rejects.append(row)
        reasons[errs[0]["code"]] += 1
    out = Path(out_path)
    rejects_path = Path(str(out_path) + ".rejects.jsonl")
    write_jsonl_atomic(out, written)
    if rejects:
        write_jsonl_atomic(rejects_path, rejects)
    elif rejects_path.exists():
        rejects_path.unlink()
    return {
        "format": fmt,
        "source": source,
        "output": str(out),
        "rejects_path": str(rejects_path) if rejects else None,
        "read": len(loaded),
        "written": len(written),
        "skipped": len(rejects),
        "skip_reasons": dict(reasons.most_common()),
        # Records that are conversations (ToolBench's query lists are not), and the share written.
        "conversations": len(loaded) - reasons.get(QUERY_ONLY, 0),
        "accepted_share": round(len(written) / max(1, len(loaded) - reasons.get(QUERY_ONLY, 0)), 4),
    }
