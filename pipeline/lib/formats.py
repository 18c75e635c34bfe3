"""Importers from other people's tool-calling dataset formats into tooltune's canonical form: the registry
(`FORMATS`), the file readers and `convert`; ShareGPT/Glaive, OpenAI legacy/ToolBench, BFCL and logged requests
here, xLAM, Hermes and Hugging Face datasets in `formats_datasets`, what they all share in `formats_base`.

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
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from pipeline.lib.common import write_jsonl_atomic
from pipeline.lib.formats_base import Result, _Calls, _content_str, _err, _finish, _parse_arguments, _tools_from, validate_canonical
from pipeline.lib.formats_datasets import import_hermes, import_hf, import_xlam, load_hf_records, xlam_type

__all__ = [
    "FORMATS",
    "import_sharegpt",
    "import_openai_legacy",
    "import_bfcl",
    "import_openai_log",
    "import_xlam",
    "import_hermes",
    "import_hf",
    "xlam_type",
    "bfcl_types_to_json_schema",
    "validate_canonical",
    "load_records",
    "load_bfcl_answers",
    "convert",
]

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
