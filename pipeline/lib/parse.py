"""Tool calls parsed out of generated text by the rules of the vLLM parser the run's format names
(hermes, llama3_json, mistral)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass


# --- parsing generations -----------------------------------------------------------------

@dataclass
class Parsed:
    calls: list[dict]  # [{"name": str, "arguments": dict}]
    text: str
    error: str | None = None  # set when the output tried to call a tool but could not be parsed


def _decode_objects(s: str):
    """Yield JSON values found back to back in s (vLLM's parsers use raw_decode the same way)."""
    dec = json.JSONDecoder()
    i = 0
    while i < len(s):
        while i < len(s) and s[i] in " \t\r\n;,":
            i += 1
        if i >= len(s):
            return
        obj, j = dec.raw_decode(s, i)
        yield obj
        i = j


def _call(obj, args_key: str) -> dict:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ValueError("a call needs a string `name`")
    args = obj.get(args_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):
        args = json.loads(args)
    if not isinstance(args, dict):
        raise ValueError("arguments must be a JSON object")
    return {"name": obj["name"], "arguments": args}


def parse(text: str, fmt: str) -> Parsed:
    """Tool calls in generated text, by the rules of the matching vLLM parser."""
    if fmt == "hermes":
        blocks = re.findall(r"<tool_call>(.*?)(?:</tool_call>|$)", text, flags=re.S)
        if "<tool_call>" not in text:
            return Parsed([], text.strip())
        content = text[: text.find("<tool_call>")].strip()
        try:
            return Parsed([_call(json.loads(b.strip()), "arguments") for b in blocks], content)
        except (ValueError, TypeError) as e:
            return Parsed([], content, f"malformed <tool_call>: {e}")
    if fmt == "llama3_json":
        body = text.strip()
        if body.startswith("<|python_tag|>"):
            body = body[len("<|python_tag|>"):].lstrip()
        if not body.startswith("{"):
            return Parsed([], text.strip())
        try:
            return Parsed([_call(o, "parameters") for o in _decode_objects(body)], "")
        except (ValueError, TypeError) as e:
            return Parsed([], "", f"malformed JSON call: {e}")
    if fmt == "mistral":
        if "[TOOL_CALLS]" not in text:
            return Parsed([], text.strip())
        content, _, body = text.partition("[TOOL_CALLS]")
        try:
            arr = next(_decode_objects(body.strip()))
            arr = arr if isinstance(arr, list) else [arr]
            return Parsed([_call(o, "arguments") for o in arr], content.strip())
        except (ValueError, TypeError, StopIteration) as e:
            return Parsed([], content.strip(), f"malformed [TOOL_CALLS]: {e}")
    raise ValueError(f"unknown tool format {fmt}")


def vllm_parser(fmt: str) -> str:
    return {"hermes": "hermes", "llama3_json": "llama3_json", "mistral": "mistral"}[fmt]
