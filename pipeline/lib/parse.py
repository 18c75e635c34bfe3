"""Tool calls parsed out of generated text by the rules of the vLLM parser the run's format names
(hermes, llama3_json, mistral)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

# --- parsing generations -----------------------------------------------------------------

@dataclass
class Parsed:
    calls: list[dict]  # [{"name": str, "arguments": the JSON value an OpenAI client reads (an object when well formed)}]
    text: str
    error: str | None = None  # set when the output tried to call a tool but could not be parsed


HERMES_CALL = re.compile(r"<tool_call>(.*?)</tool_call>|<tool_call>(.*)", re.S)  # vLLM's, with its cut-off case
MISTRAL_ARRAY = re.compile(r"\[{.*}\]", re.S)


def _hermes(text: str) -> Parsed:
    if "<tool_call>" not in text:
        return Parsed([], text.strip())
    content = text[: text.find("<tool_call>")].strip()
    try:
        calls = []
        for closed, cut in HERMES_CALL.findall(text):
            obj = json.loads(closed if closed else cut)
            if not isinstance(obj["name"], str):
                raise TypeError("`name` is not a string")
            calls.append({"name": obj["name"], "arguments": obj["arguments"]})  # any JSON value, as vLLM passes it on
        return Parsed(calls, content)
    except (ValueError, TypeError, KeyError) as e:  # vLLM then returns the whole output as content, no calls
        return Parsed([], text.strip(), f"malformed <tool_call>: {type(e).__name__}: {e}")


def _llama3_json(text: str) -> Parsed:
    """vLLM's llama3_json: every top-level JSON object anywhere in the output is a call; one that is not JSON,
    or lacks `name` or `arguments`/`parameters`, makes the whole output plain content."""
    body = text.strip()
    tried = body.startswith(("{", "<|python_tag|>"))
    if "<|python_tag|>" not in text and "{" not in text:
        return Parsed([], body)
    dec = json.JSONDecoder()
    calls, end = [], -1
    try:
        for m in re.finditer(r"\{", text):
            if m.start() <= end:
                continue  # a brace inside an object already read
            obj, n = dec.raw_decode(text[m.start():])
            end = m.start() + n
            args = obj["arguments"] if "arguments" in obj else obj["parameters"]
            if not isinstance(obj["name"], str):
                raise TypeError("`name` is not a string")
            calls.append({"name": obj["name"], "arguments": args})
    except (ValueError, TypeError, KeyError) as e:
        return Parsed([], body, f"malformed JSON call: {type(e).__name__}: {e}" if tried else None)
    if not calls:
        return Parsed([], body)
    return Parsed(calls, "")


def _mistral(text: str) -> Parsed:
    """vLLM's mistral parser for tokenizers before v11 (Mistral 7B v0.3): `content[TOOL_CALLS][{...}, ...]`."""
    if "[TOOL_CALLS]" not in text:
        return Parsed([], text.strip())
    content, *segments = text.split("[TOOL_CALLS]")
    body = next((seg.strip() for seg in segments if seg.strip()), "")
    try:
        parsed, _ = json.JSONDecoder().raw_decode(body)
    except ValueError:
        try:
            parsed = json.loads(MISTRAL_ARRAY.findall(body)[0])
        except (IndexError, ValueError):
            parsed = None
    calls = []
    for obj in [parsed] if isinstance(parsed, dict) else parsed if isinstance(parsed, list) else []:
        if not isinstance(obj, dict) or not ("name" in obj or "arguments" in obj):
            continue
        args = obj.get("arguments")
        if args is None:
            args = {}
        elif isinstance(args, str):  # sent as it is: the client parses it, or keeps the text
            try:
                args = json.loads(args)
            except ValueError:
                pass
        calls.append({"name": obj["name"] if isinstance(obj.get("name"), str) else "", "arguments": args})
    if not calls:
        return Parsed([], body, "malformed [TOOL_CALLS]: no call object after it")
    return Parsed(calls, content.strip())


def parse(text: str, fmt: str) -> Parsed:
    """Tool calls in generated text, by the rules of the vLLM parser of the same name (vLLM 0.32), so that a call
    scores here as it is served: each call's arguments are what an OpenAI client gets, any JSON value."""
    if fmt == "hermes":
        return _hermes(text)
    if fmt == "llama3_json":
        return _llama3_json(text)
    if fmt == "mistral":
        return _mistral(text)
    raise ValueError(f"unknown tool format {fmt}")


def vllm_parser(fmt: str) -> str:
    return {"hermes": "hermes", "llama3_json": "llama3_json", "mistral": "mistral"}[fmt]


# --- alternatives: a reference call that accepts several values (BFCL's possible answers) -----------------------

def same_value(x, v) -> bool:
    """`x` (what a reply gave) is the acceptable value `v`: numbers by value (5 and 5.0), a dict whose values are all
    lists of alternatives as nested acceptable arguments (as BFCL nests them), lists element by element."""
    if isinstance(v, dict) and v and all(isinstance(a, list) for a in v.values()):
        return acceptable_args(x, v)
    if isinstance(v, list):
        return isinstance(x, list) and len(x) == len(v) and all(same_value(a, b) for a, b in zip(x, v))
    if isinstance(v, bool) or isinstance(x, bool):
        return type(x) is type(v) and x == v
    if isinstance(v, (int, float)) and isinstance(x, (int, float)):
        return x == v
    return type(x) is type(v) and x == v


def acceptable_args(args, acceptable: dict) -> bool:
    """The arguments of a call are one of the acceptable forms: every argument given is a known one at one of its
    acceptable values, every argument left out may be (its values include "")."""
    if not isinstance(args, dict) or set(args) - set(acceptable):
        return False
    for name, values in acceptable.items():
        if name not in args:
            if "" not in values:
                return False
        elif not any(same_value(args[name], v) for v in values if not (isinstance(v, str) and v == "")):
            return False
    return True


def calls_match(produced: list[dict], reference: list[dict]) -> bool:
    """The produced calls are the reference calls in some order: equal arguments, or, where a reference call carries
    `acceptable`, arguments of one of its acceptable forms (every pairing is tried: two calls of one tool may
    each fit either reference)."""
    if len(produced) != len(reference):
        return False
    if not reference:
        return True
    ref, rest = reference[0], reference[1:]
    for k, c in enumerate(produced):
        fits = c["name"] == ref["name"] and (acceptable_args(c["arguments"], ref["acceptable"]) if ref.get("acceptable")
                                             else _canon(c["arguments"]) == _canon(ref["arguments"]))
        if fits and calls_match(produced[:k] + produced[k + 1:], rest):
            return True
    return False


def _canon(args) -> str:
    return json.dumps(args, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
