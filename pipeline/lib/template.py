"""The run's chat template: which one, its tool-call format and end of turn, and rendering with it.

Every stage that turns a conversation into text goes through `Chat.render()`; tooltune's own Hermes
template has a Python twin (`HermesRenderer`) that renders text and assistant spans in one pass.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.lib.common import StageError
from pipeline.lib.recipe import Recipe, resolve_path

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
FORMATS = ("hermes", "llama3_json", "mistral")


# --- the template ------------------------------------------------------------------------

def template_text(recipe: Recipe, tokenizer) -> str:
    """The exact Jinja text this run renders with (and exports byte for byte)."""
    if recipe.chat_template == "hermes":
        return hermes_for(tokenizer)
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


def is_one_token(tokenizer, text: str) -> bool:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return len(ids) == 1


def hermes_for(tokenizer) -> str:
    """tooltune's Hermes template for this tokenizer. Its turns end with ChatML's <|im_end|>, which
    a model must be able to write as one token for generation to stop there. Tokenizers without it
    (Llama 2, Phi-3.5) end each turn with their own end-of-sequence token instead, which every
    server already stops at; <|im_start|> then stays plain text."""
    text = (TEMPLATES / "hermes.jinja").read_text()
    if is_one_token(tokenizer, "<|im_end|>") or not tokenizer.eos_token:
        return text
    return text.replace("'<|im_end|>\\n'", "eos_token + '\\n'")


def end_of_turn(fmt: str, tokenizer, template: str = "") -> str:
    if fmt == "hermes" and "<|im_end|>" in template:
        return "<|im_end|>"
    return {"llama3_json": "<|eot_id|>"}.get(fmt, tokenizer.eos_token)


@dataclass
class Chat:
    """A tokenizer bound to one template and one tool-call format."""

    tokenizer: object
    template: str
    fmt: str
    _variables: dict | None = field(default=None, repr=False)
    _decoded: dict = field(default_factory=dict, repr=False)  # token id -> its text
    _prefixes: dict = field(default_factory=dict, repr=False)  # shared prefix text -> its (ids, offsets) or None

    @classmethod
    def for_recipe(cls, recipe: Recipe, tokenizer) -> "Chat":
        tpl = template_text(recipe, tokenizer)
        tokenizer.chat_template = tpl
        return cls(tokenizer, tpl, detect_format(tpl, recipe.tool_format))

    @functools.cached_property
    def eot(self) -> str:
        return end_of_turn(self.fmt, self.tokenizer, self.template)

    def decoded(self, token_id: int) -> str:
        """One token's text, remembered."""
        if token_id not in self._decoded:
            self._decoded[token_id] = self.tokenizer.decode([token_id])
        return self._decoded[token_id]

    @functools.cached_property
    def token_bytes(self) -> tuple:
        """(bytes per token id, ascii_only) where token offsets follow from the ids alone, else (None, _).
        See `byte_level_lengths`."""
        from pipeline.lib.template import byte_level_lengths

        return byte_level_lengths(self.tokenizer)

    def fast_spans(self):
        """A renderer that returns (text, assistant spans) in one pass, where one exists for this template."""
        return HermesRenderer() if self.template == HERMES_TEMPLATE else None

    def render(self, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool = False) -> str:
        return self.render_adapted(adapt(messages, self.fmt), tools, add_generation_prompt)

    def render_adapted(self, msgs: list[dict], tools: list[dict] | None, add_generation_prompt: bool = False) -> str:
        """`apply_chat_template(tokenize=False)` without its per-call overhead.

        The same function transformers calls, with the same compiled (sandboxed, cached) template and
        the same template variables (the tokenizer's special tokens), looked up once instead of per call.
        tests/test_count.py checks the result against `apply_chat_template` for every fixture tokenizer.
        """
        from transformers.utils.chat_template_utils import render_jinja_template

        if self._variables is None:
            self._variables = dict(self.tokenizer.special_tokens_map)
        own = own_compiled(self.template)
        if own is not None:
            return own.render(messages=msgs, tools=tools or None, documents=None,
                              add_generation_prompt=add_generation_prompt, **self._variables)
        rendered, _ = render_jinja_template(conversations=[msgs], tools=tools or None, chat_template=self.template,
                                            add_generation_prompt=add_generation_prompt, **self._variables)
        return rendered[0]

    def prompt(self, messages: list[dict], tools: list[dict] | None) -> str:
        """The text a server sends the model before the assistant turn that follows `messages`."""
        return self.render(messages, tools, add_generation_prompt=True)


_OWN: dict[str, object] = {}


def own_compiled(template: str):
    """tooltune's own templates (templates/*.jinja), compiled outside Jinja's sandbox; None for any other.

    transformers renders every template in Jinja's sandbox, which guards against hostile templates
    from a hub and costs about 40% of a render (every attribute and method is checked). The templates
    shipped in this package are not hostile, so they get a plain environment set up the way
    transformers sets up its own (trim_blocks, lstrip_blocks, loopcontrols, a `tojson` that does not
    escape HTML, `raise_exception`, `strftime_now`); tests/test_chat.py checks the two render alike.
    """
    if not _OWN:
        import datetime

        import jinja2

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        for path in sorted(TEMPLATES.glob("*.jinja")):
            text = path.read_text()
            _OWN[text] = env.from_string(text)
        _OWN.setdefault("", None)
    return _OWN.get(template)

class HermesRenderer:
    """templates/hermes.jinja written out in Python, for the count stage: the same text, and the
    assistant spans found in the same pass instead of by ~4 extra renders per conversation.

    The count stage renders every conversation once with its tool schemas and once per assistant
    turn for the loss mask, and in Jinja that was about half of its time. This class does it for
    tooltune's own template only (any other template goes through Jinja), and the block that lists
    the tools is built once per tool list. tests/test_chat.py checks text and spans against the
    Jinja template on the bundled data and on generated conversations; `encode_many` re-checks the
    first conversation of every group of each chunk against Jinja and falls back to it on any
    difference.
    """

    TOOLS_HEADER = ('\n\n# Tools\nTo call tools reply only with <tool_call>{"name": <tool>, "arguments": <json object>}'
                    '</tool_call>, one block per call. Ask for a missing required argument; answer in text when no tool fits.\n')

    def __init__(self):
        self._blocks: dict[int, tuple[list, str]] = {}

    def tools_block(self, tools: list[dict]) -> str:
        hit = self._blocks.get(id(tools))
        if hit is not None and hit[0] is tools:
            return hit[1]
        lines = [self.TOOLS_HEADER]
        for tool in tools:
            f = tool["function"] if "function" in tool else tool
            params = f.get("parameters") or {}
            props, required = params.get("properties", {}), params.get("required", [])
            args = []
            for pname, prop in props.items():
                kind = "|".join(str(v) for v in prop["enum"]) if "enum" in prop else str(prop.get("type", "any"))
                args.append(f"{pname}{'' if pname in required else '?'}: {kind}")
            desc = f": {f['description']}" if f.get("description") else ""
            lines.append(f"- {f['name']}({', '.join(args)}){desc}\n")
        block = "".join(lines)
        self._blocks[id(tools)] = (tools, block)
        return block

    def __call__(self, messages: list[dict], tools: list[dict] | None) -> tuple[str, list[tuple[int, int]]]:
        if messages and messages[0]["role"] == "system":
            system, rest = messages[0]["content"], messages[1:]
        else:
            system, rest = "You are a helpful assistant.", messages
        out = ["<|im_start|>system\n" + system]
        if tools:
            out.append(self.tools_block(tools))
        out.append("<|im_end|>\n")
        at = sum(len(x) for x in out)
        spans = []
        for i, m in enumerate(rest):
            role = m["role"]
            if role == "assistant":
                head = "<|im_start|>assistant\n"
                body = [m["content"]] if m.get("content") else []
                for k, call in enumerate(m.get("tool_calls") or []):
                    fn = call["function"] if "function" in call else call
                    a = fn["arguments"]
                    a = a if isinstance(a, str) else json.dumps(a, ensure_ascii=False)
                    body.append(("\n" if m.get("content") or k else "") + '<tool_call>{"name": "' + fn["name"]
                                + '", "arguments": ' + a + "}</tool_call>")
                text = head + "".join(body) + "<|im_end|>\n"
                spans.append((at + len(head), at + len(text) - 1))
            elif role == "tool":
                first = i == 0 or rest[i - 1]["role"] != "tool"
                last = i == len(rest) - 1 or rest[i + 1]["role"] != "tool"
                text = (("<|im_start|>user\n" if first else "\n") + "<tool_response>" + m["content"] + "</tool_response>"
                        + ("<|im_end|>\n" if last else ""))
            else:
                text = "<|im_start|>" + role + "\n" + m["content"] + "<|im_end|>\n"
            out.append(text)
            at += len(text)
        return "".join(out), spans


HERMES_TEMPLATE = (TEMPLATES / "hermes.jinja").read_text()


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


ASCII_SAFE_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD"}


def byte_level_lengths(tokenizer) -> tuple:
    """(numpy array: id -> the number of bytes that token stands for, ascii_only) for a byte-level BPE
    tokenizer (Llama 3, Qwen2.5, SmolLM2, GPT-2 style): one whose every token is a fixed byte string and
    whose tokens of a text concatenate to the text's bytes. Then a token's offsets are a cumulative sum
    of these lengths and need not be asked of the tokenizer (which costs a third of its time). ascii_only:
    the tokenizer normalizes text (NFC), which leaves only ASCII text untouched. (None, False) for any
    other tokenizer (SentencePiece-style Metaspace, byte fallback, lowercasing, ...)."""
    import numpy as np

    try:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

        spec = json.loads(tokenizer.backend_tokenizer.to_str())
    except Exception:  # noqa: BLE001 - a tokenizer without a Rust backend: ask it for offsets
        return None, False
    norm, pre, model = spec.get("normalizer"), spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    norms = [] if norm is None else (norm.get("normalizers") if norm.get("type") == "Sequence" else [norm])
    if any(n.get("type") not in ASCII_SAFE_NORMALIZERS for n in norms):
        return None, False
    pres = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    if (model.get("type") != "BPE" or not any(q.get("type") == "ByteLevel" for q in pres)
            or any(q.get("type") not in ("ByteLevel", "Split", "Digits") for q in pres)
            or any(q.get("type") == "ByteLevel" and q.get("add_prefix_space") for q in pres)):
        return None, False
    byte_chars = set(bytes_to_unicode().values())
    added = {t.content for t in tokenizer.added_tokens_decoder.values()}
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    table = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for text, i in vocab.items():
        if text in added:
            table[i] = len(text.encode("utf-8"))
        elif set(text) <= byte_chars:
            table[i] = len(text)  # one character of the byte alphabet per byte
        else:
            return None, False
    return table, bool(norms)
