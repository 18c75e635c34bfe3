"""One chat template per run: render, mask, and parse tool calls exactly as the server will.

Every stage that turns a conversation into tokens goes through `render()` and `assistant_spans()`,
and the evaluate stage parses generations with `parse()`, whose rules follow the vLLM tool parser
named by the run's tool format (hermes, llama3_json, mistral).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.common import StageError
from pipeline.recipe import Recipe, resolve_path

TEMPLATES = Path(__file__).resolve().parent / "templates"
FORMATS = ("hermes", "llama3_json", "mistral")


# --- the template ------------------------------------------------------------------------

def template_text(recipe: Recipe, tokenizer) -> str:
    """The exact Jinja text this run renders with (and exports byte for byte)."""
    if recipe.chat_template == "hermes":
        return (TEMPLATES / "hermes.jinja").read_text()
    if recipe.chat_template:
        return resolve_path(recipe.chat_template).read_text()
    tpl = tokenizer.chat_template
    if isinstance(tpl, dict):  # some tokenizers keep several named templates
        tpl = tpl.get("tool_use") or tpl.get("default")
    if not tpl:
        raise StageError(
            f"the tokenizer of {recipe.tokenizer or recipe.model} has no chat template; set `chat_template=hermes`."
        )
    return tpl


def detect_format(template: str, configured: str = "auto") -> str:
    if configured != "auto":
        return configured
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<tool_call>" in template:
        return "hermes"
    if "ipython" in template or "<|python_tag|>" in template:
        return "llama3_json"
    raise StageError("cannot tell the template's tool-call format; set `tool_format` (hermes | llama3_json | mistral).")


def end_of_turn(fmt: str, tokenizer) -> str:
    return {"hermes": "<|im_end|>", "llama3_json": "<|eot_id|>"}.get(fmt, tokenizer.eos_token)


@dataclass
class Chat:
    """A tokenizer bound to one template and one tool-call format."""

    tokenizer: object
    template: str
    fmt: str

    @classmethod
    def for_recipe(cls, recipe: Recipe, tokenizer) -> "Chat":
        tpl = template_text(recipe, tokenizer)
        tokenizer.chat_template = tpl
        return cls(tokenizer, tpl, detect_format(tpl, recipe.tool_format))

    @property
    def eot(self) -> str:
        return end_of_turn(self.fmt, self.tokenizer)

    def render(self, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            adapt(messages, self.fmt), tools=tools or None, tokenize=False,
            add_generation_prompt=add_generation_prompt, chat_template=self.template,
        )

    def prompt(self, messages: list[dict], tools: list[dict] | None) -> str:
        """The text a server sends the model before the assistant turn that follows `messages`."""
        return self.render(messages, tools, add_generation_prompt=True)


# --- message normalization per format ------------------------------------------------------

def mistral_id(value: str) -> str:
    """Mistral v0.3 wants 9 alphanumeric characters per call id."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9]{9}", value):
        return value
    return hashlib.sha1(str(value).encode()).hexdigest()[:9]


def adapt(messages: list[dict], fmt: str) -> list[dict]:
    """Canonical messages -> what this family's template expects (same meaning, its conventions)."""
    out = []
    for m in copy.deepcopy(messages):
        if fmt == "mistral":
            for c in m.get("tool_calls") or []:
                c["id"] = mistral_id(c.get("id", ""))
                if not isinstance(c["function"]["arguments"], str):
                    c["function"]["arguments"] = json.dumps(c["function"]["arguments"], ensure_ascii=False)
            if m["role"] == "tool":
                m["tool_call_id"] = mistral_id(m.get("tool_call_id", ""))
        if fmt == "llama3_json" and m.get("tool_calls") and len(m["tool_calls"]) > 1:
            # Llama 3.1's template takes one call per assistant turn: parallel calls become consecutive turns.
            for c in m["tool_calls"]:
                out.append({"role": "assistant", "content": None, "tool_calls": [c]})
            continue
        if m["role"] == "assistant" and m.get("tool_calls") and fmt != "hermes" and not m.get("content"):
            m["content"] = None if fmt == "mistral" else ""
        out.append(m)
    return out


# --- the loss mask -----------------------------------------------------------------------

def assistant_spans(chat: Chat, messages: list[dict], tools: list[dict] | None) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation and find each assistant turn's characters, end-of-turn included.

    Official templates have no {% generation %} markers, so each span comes from the template itself:
    render the conversation up to the turn with the generation prompt (A) and with the turn (B);
    B minus A is what the model must write. It is then found in the full rendering, left to right.
    """
    msgs = adapt(messages, chat.fmt)
    full = chat.tokenizer.apply_chat_template(msgs, tools=tools or None, tokenize=False, chat_template=chat.template)
    spans, cursor = [], 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        a = chat.tokenizer.apply_chat_template(msgs[:i], tools=tools or None, tokenize=False,
                                               add_generation_prompt=True, chat_template=chat.template) if i else ""
        # The last turn's rendering is the full conversation: reuse it (one render in five saved).
        b = full if i == len(msgs) - 1 else chat.tokenizer.apply_chat_template(
            msgs[: i + 1], tools=tools or None, tokenize=False, chat_template=chat.template)
        if not b.startswith(a):
            # Templates that move text around (Mistral puts tools before the last user turn): take the
            # common prefix, the turn is what follows it.
            k = 0
            while k < min(len(a), len(b)) and a[k] == b[k]:
                k += 1
            a = a[:k]
        turn = b[len(a):].rstrip()
        if not turn:
            raise StageError(f"the template renders assistant turn {i} as empty text; check the chat template.")
        if chat.eot and not turn.endswith(chat.eot):
            # Some templates (Mistral) end the turn with eos; others leave trailing text after the call.
            idx = turn.rfind(chat.eot)
            if idx >= 0:
                turn = turn[: idx + len(chat.eot)]
        start = full.find(turn, cursor)
        if start < 0:
            raise StageError(f"assistant turn {i} is not found in the full rendering; the template is not prefix-stable.")
        spans.append((start, start + len(turn)))
        cursor = start + len(turn)
    return full, spans


def tokenize_with_mask(chat: Chat, messages: list[dict], tools: list[dict] | None, return_offsets: bool = False):
    """Token ids of the full rendering and a 0/1 mask of the tokens trained on (assistant spans).

    With `return_offsets`, also each token's character span, which `audit_mask` can take instead of
    tokenizing the same text again."""
    full, spans = assistant_spans(chat, messages, tools)
    enc = chat.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    mask = [0] * len(ids)
    j = 0
    for t, (s, e) in enumerate(offsets):
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        if j < len(spans) and s < spans[j][1] and e > spans[j][0]:
            mask[t] = 1
    return (full, spans, ids, mask, offsets) if return_offsets else (full, spans, ids, mask)


def audit_mask(chat: Chat, messages: list[dict], tools, full: str, spans, ids: list[int], mask: list[int],
               where: str = "", offsets=None) -> None:
    """Fail loudly if the mask trains a user or tool-result token, or misses an assistant turn or its end."""
    tok = chat.tokenizer
    if offsets is None:
        enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
        if enc["input_ids"] != list(ids):
            raise StageError(f"{where}: token ids do not match the rendering.")
        offsets = enc["offset_mapping"]
    trained = [(offsets[t][0], offsets[t][1]) for t in range(len(ids)) if mask[t]]
    # 1. Every trained token lies in an assistant span (tokens at a span's edge may carry a newline).
    for s, e in trained:
        if not any(a - 1 <= s and e <= b + 1 for a, b in spans):
            raise StageError(f"{where}: a token outside every assistant turn would be trained: {full[s:e]!r}.")
    # 2. Each span is covered, its end-of-turn token included.
    for a, b in spans:
        covered = [t for t in range(len(ids)) if offsets[t][0] < b and offsets[t][1] > a]
        missing = [t for t in covered if not mask[t]]
        if missing:
            raise StageError(f"{where}: assistant text {full[a:b][:60]!r} is not fully trained.")
        if chat.eot and not tok.decode([ids[covered[-1]]]).endswith(chat.eot.strip()) and full[a:b].endswith(chat.eot):
            raise StageError(f"{where}: the end-of-turn {chat.eot!r} of an assistant turn is not trained.")
    # 3. No user or tool-result content is trained.
    for m in messages:
        if m["role"] in ("user", "tool") and isinstance(m.get("content"), str) and len(m["content"].strip()) >= 8:
            text = m["content"].strip()
            start = full.find(text)
            while start >= 0:
                end = start + len(text)
                inside_assistant = any(a <= start and end <= b for a, b in spans)
                if not inside_assistant and any(s < end and e > start for s, e in trained):
                    raise StageError(f"{where}: {m['role']} text {text[:40]!r} would be trained.")
                start = full.find(text, end)


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
