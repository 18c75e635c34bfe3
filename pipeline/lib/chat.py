"""One chat template per run: render, mask, and parse tool calls exactly as the server will.

Every stage that turns a conversation into tokens goes through `render()` and `assistant_spans()`,
and the evaluate stage parses generations with `parse()`, whose rules follow the vLLM tool parser
named by the run's tool format (hermes, llama3_json, mistral).
"""

from __future__ import annotations

import copy
import functools
import gc
import hashlib
import itertools
import json
import os
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


# --- the loss mask -----------------------------------------------------------------------

def assistant_spans(chat: Chat, messages: list[dict], tools: list[dict] | None) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation and find each assistant turn's characters, end-of-turn included.

    Official templates have no {% generation %} markers, so each span comes from the template itself:
    render the conversation up to the turn with the generation prompt (A) and with the turn (B);
    B minus A is what the model must write. It is then found in the full rendering, left to right.

    The prefix renders leave the tools out when they can: tool schemas change where a turn sits, not
    what it says, in every template we know (Hermes, Llama 3.1, Qwen2.5, Mistral v0.3), and rendering
    15 schemas is most of a render's cost. Where a turn rendered without tools is not found in the
    full rendering (a template that writes calls differently when tools are given), the renders are
    redone with the tools. The mask audit then checks the result either way.
    """
    msgs = adapt(messages, chat.fmt)
    full = chat.render_adapted(msgs, tools)
    if tools:
        try:
            return full, _spans(chat, msgs, None, full)
        except Exception:  # noqa: BLE001 - any failure without tools: do it the exact way
            pass
    return full, _spans(chat, msgs, tools, full, whole=full)


def _spans(chat: Chat, msgs: list[dict], tools: list[dict] | None, full: str,
           whole: str | None = None) -> list[tuple[int, int]]:
    """Spans of the assistant turns in `full`, from renders with `tools`; `whole` is the rendering of
    the whole conversation with those tools when the caller already has it."""
    spans, cursor, last = [], 0, -1
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        # Start looking after the messages since the last assistant turn: a reply may repeat the
        # user's words ("Yes" after "Yes"), and both end with the same end-of-turn token.
        after = cursor
        for prev in msgs[last + 1:i]:
            text = prev.get("content")
            k = full.find(text, after) if isinstance(text, str) and text else -1
            if k >= 0:
                after = k + len(text)
        last = i
        a = chat.render_adapted(msgs[:i], tools, add_generation_prompt=True) if i else ""
        if i == len(msgs) - 1 and whole is not None:
            b = whole  # the last turn's rendering is the whole conversation
        else:
            b = chat.render_adapted(msgs[: i + 1], tools)
        if not b.startswith(a):
            # Templates that move text around (Mistral puts tools before the last user turn): take the
            # common prefix, the turn is what follows it.
            a = os.path.commonprefix([a, b])
        turn = b[len(a):].rstrip()
        if not turn:
            raise StageError(f"the template renders assistant turn {i} as empty text; check the chat template.")
        if chat.eot and not turn.endswith(chat.eot):
            # Some templates (Mistral) end the turn with eos; others leave trailing text after the call.
            idx = turn.rfind(chat.eot)
            if idx >= 0:
                turn = turn[: idx + len(chat.eot)]
        start = full.find(turn, after)
        if start < 0:
            start = full.find(turn, cursor)
        if start < 0:
            raise StageError(f"assistant turn {i} is not found in the full rendering; the template is not prefix-stable.")
        spans.append((start, start + len(turn)))
        cursor = start + len(turn)
    return spans


def mask_from_offsets(offsets, spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token that overlaps an assistant span (`Layout.mask` for one conversation)."""
    import numpy as np

    offs = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    return Layout([""], [spans], None, offs, np.array([0, len(offs)])).mask().tolist()  # one text: no shift


def tokenize_with_mask(chat: Chat, messages: list[dict], tools: list[dict] | None):
    """Token ids of the full rendering and a 0/1 mask of the tokens trained on (assistant spans):
    one conversation at a time (`encode_many` does many at once)."""
    full, spans = assistant_spans(chat, messages, tools)
    enc = chat.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    return full, spans, enc["input_ids"], mask_from_offsets(enc["offset_mapping"], spans)


# Normalizers that leave ASCII text as it is: with one of them, token offsets follow from the ids only
# for ASCII text.
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


def summed_offsets(table, ids, bounds, texts: list[str]):
    """(T, 2) char offsets of the tokens `ids` of `texts` end to end (text k's are ids[bounds[k]:bounds[k + 1]]),
    each within its own text, summed from the bytes each token stands for (`byte_level_lengths`);
    None when they do not add up to the texts (then ask the tokenizer)."""
    import numpy as np

    if len(ids) and ids.max() >= len(table):
        return None
    width = table[ids]
    ends = np.cumsum(width)
    before = np.concatenate([[0], ends])[bounds]  # bytes before each text's first token
    n_bytes = np.fromiter((len(t) if t.isascii() else len(t.encode("utf-8")) for t in texts), np.int64, len(texts))
    if not np.array_equal(np.diff(before), n_bytes):
        return None
    ends -= np.repeat(before[:-1], np.diff(bounds))
    offs = np.stack([ends - width, ends], axis=1)
    for k, t in enumerate(texts):
        if not t.isascii():  # bytes to characters (a token may hold part of one)
            raw = np.frombuffer(t.encode("utf-8"), dtype=np.uint8)
            char_of = np.cumsum((raw & 0xC0) != 0x80) - 1
            o = offs[bounds[k]:bounds[k + 1]]
            o[:] = np.stack([char_of[o[:, 0]], char_of[np.maximum(o[:, 1] - 1, 0)] + 1], axis=1)
    return offs


def split_points(tokenizer) -> list[str]:
    """Added tokens the tokenizer cuts the text at before any other step, without eating the whitespace
    before them: text on either side of one is tokenized on its own."""
    out = []
    for tok in getattr(tokenizer, "added_tokens_decoder", {}).values():
        content = getattr(tok, "content", str(tok))
        if content and not getattr(tok, "lstrip", False):
            out.append(content)
    return out


def shared_cut(texts: list[str], specials: list[str]) -> int:
    """Where to split texts that begin alike: the start of the last special token inside their common prefix."""
    prefix = os.path.commonprefix(texts)
    best = 0
    for sp in specials:
        k = prefix.rfind(sp)
        if k > best:
            best = k
    return best


def where(record: dict) -> str:
    """file:line of a validated record (its id when it has no source)."""
    src = record.get("source") or {}
    return f"{src['file']}:{src['line']}" if "file" in src and "line" in src else str(record.get("id", "?"))


_WORKER: tuple | None = None  # (chat, records) inherited by forked workers


def _render_one(chat: Chat, r: dict, fast=None) -> tuple[str, list[tuple[int, int]]]:
    try:
        if fast is not None:
            return fast(r["messages"], r["tools"])
        return assistant_spans(chat, r["messages"], r["tools"])
    except StageError as e:
        raise StageError(f"{where(r)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a template that cannot render this conversation
        raise StageError(f"{where(r)}: the chat template cannot render this conversation: {e}") from None


def _render_chunk(chat: Chat, part: list[dict]) -> list:
    """Each record's (text, spans): in one pass where the template has a Python twin, checked against
    the template on the first record of each (tools, system) group; else through the template."""
    fast = chat.fast_spans()
    if fast is not None:
        out = [_render_one(chat, r, fast) for r in part]
        firsts = {}
        for k, r in enumerate(part):
            firsts.setdefault(_group_key(r), k)
        if all(out[k] == _render_one(chat, part[k]) for k in firsts.values()):
            return out
    return [_render_one(chat, r) for r in part]


def _encode_chunk(chat: Chat, part: list[dict], audit: bool) -> list:
    import numpy as np

    lay = _tokenize_chunk(chat, part, _render_chunk(chat, part))
    mask = lay.mask()
    if audit:
        lay.audit(chat, [r["messages"] for r in part], mask, [where(r) for r in part])
    ids = lay.ids.astype(np.int32)
    b = lay.bounds
    return [(lay.fulls[k], lay.spans[k], ids[b[k]:b[k + 1]], mask[b[k]:b[k + 1]]) for k in range(len(part))]


def _encode_range(job: tuple[int, int, bool]) -> list:
    chat, records = _WORKER
    return _encode_chunk(chat, records[job[0]:job[1]], job[2])


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def encode_many(chat: Chat, records: list[dict], chunk: int = 256, on_rendered=None, workers: int | None = None,
                audit: bool = True):
    """(record, full, spans, ids, mask) for each record, in order: what `tokenize_with_mask` returns
    for each (ids and mask as numpy int32 and int8 arrays), computed in batches, the masks checked as
    `audit_mask` checks them (unless `audit=False`).

    Rendering: tooltune's own Hermes template has a Python twin (`HermesRenderer`) that writes the
    text and finds the assistant spans in one pass, ~40x faster than Jinja; other templates are
    rendered by Jinja, once per conversation and twice per assistant turn for the loss mask.
    Tokenizing: conversations of one agent begin with the same system prompt and tool schemas (76%
    of the tokens of the bundled data); within each chunk, records that share their tool list and
    system message are cut at the last special token of their common rendered prefix, that prefix is
    tokenized once (per worker: `Chat` remembers it) and the rest in one batched call. Text is cut
    only before a special token, which the tokenizer splits out before anything else, and each prefix
    is checked the first time: one of its records tokenized whole must give the same ids, or its
    records are tokenized whole. For byte-level BPE tokenizers the batched call asks for ids only and
    the offsets are summed from each token's bytes (`summed_offsets`, checked per chunk against the
    tokenizer's own).
    Masking and its audit run on a whole chunk at once (`Layout`). With more than one chunk, whole
    chunks (render, tokenize, mask, audit) run in forked worker processes, one per usable core.
    `on_rendered(n)` is called as chunks finish.
    """
    global _WORKER
    bounds = [(lo, min(lo + chunk, len(records))) for lo in range(0, len(records), chunk)]
    n_workers = min(workers or usable_cores(), len(bounds))
    pool = None
    if n_workers > 1 and hasattr(os, "fork"):
        import multiprocessing

        chat.render_adapted([{"role": "user", "content": "x"}], None)  # fill the caches the workers inherit
        _ = chat.token_bytes  # computed here once, so that the forked workers inherit it
        _WORKER = (chat, records)
        # One tokenizer thread per worker process: the workers are the parallelism.
        before = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        # The workers' garbage collector must not walk (and so copy, page by page) the parent's objects.
        gc.freeze()
        try:
            pool = multiprocessing.get_context("fork").Pool(n_workers)
        finally:
            gc.unfreeze()
            if before is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = before
        chunks = pool.imap(_encode_range, [(lo, hi, audit) for lo, hi in bounds])
    else:
        chunks = (_encode_chunk(chat, records[lo:hi], audit) for lo, hi in bounds)
    try:
        for (lo, hi), encoded in zip(bounds, chunks):
            if on_rendered:
                on_rendered(hi - lo)
            for r, (full, spans, ids, mask) in zip(records[lo:hi], encoded):
                yield r, full, spans, ids, mask
    finally:
        if pool is not None:
            pool.terminate()
            _WORKER = None


def _group_key(r: dict) -> tuple:
    m0 = r["messages"][0] if r["messages"] else {}
    return id(r["tools"]), (m0.get("content") if m0.get("role") == "system" else None)


def _tokenize_chunk(chat: Chat, part: list[dict], rendered: list) -> "Layout":
    import numpy as np

    tok = chat.tokenizer
    specials = split_points(tok)
    groups: dict = {}
    for k, r in enumerate(part):
        groups.setdefault(_group_key(r), []).append(k)
    cut = [""] * len(part)  # the shared prefix text each record is cut after ("" = tokenized whole)
    shared = chat._prefixes  # prefix text -> its (ids, offsets), or None where the tokenizer merges across the cut
    for members in groups.values():
        if len(members) < 2:
            continue
        n = shared_cut([rendered[k][0] for k in members], specials)
        if n < 32:
            continue
        head = rendered[members[0]][0][:n]
        if head not in shared:  # once per prefix (one agent's system prompt and tools), checked on one record
            enc = tok(head, add_special_tokens=False, return_offsets_mapping=True)
            whole = tok(rendered[members[0]][0], add_special_tokens=False)["input_ids"]
            rest = tok(rendered[members[0]][0][n:], add_special_tokens=False)["input_ids"]
            if len(shared) >= 64:
                shared.clear()
            shared[head] = ((np.asarray(enc["input_ids"], dtype=np.int64),
                             np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2))
                            if list(whole) == list(enc["input_ids"]) + list(rest) else None)
        if shared[head] is None:
            continue  # this tokenizer merges across the cut: tokenize these whole
        for k in members:
            cut[k] = head
    t_ids, t_off, t_bounds = _encode_tails(chat, [rendered[k][0][len(cut[k]):] for k in range(len(part))])
    ids, offs, lengths = [], [], []
    for k in range(len(part)):
        a, b = t_bounds[k], t_bounds[k + 1]
        if cut[k]:
            p_ids, p_off = shared[cut[k]]
            ids += [p_ids, t_ids[a:b]]
            offs += [p_off, t_off[a:b] + len(cut[k])]
            lengths.append(len(p_ids) + b - a)
        else:
            ids.append(t_ids[a:b])
            offs.append(t_off[a:b])
            lengths.append(b - a)
    return Layout([full for full, _ in rendered], [spans for _, spans in rendered], np.concatenate(ids),
                  np.concatenate(offs), np.cumsum([0] + lengths))


def _encode_tails(chat: Chat, texts: list[str]):
    """(ids, (T, 2) char offsets, bounds) of all texts end to end, from one batched call of the Rust
    tokenizer: text k's tokens are ids[bounds[k]:bounds[k + 1]], offsets within text k.

    For a byte-level BPE tokenizer the offsets are summed from the bytes each token stands for, so the
    tokenizer is asked for ids only (`encode_batch_fast`, ~30% faster); the first text is checked
    against the offsets the tokenizer gives, and if any text's tokens do not add up to its bytes the
    whole batch gets the tokenizer's own offsets."""
    import numpy as np

    bt = chat.tokenizer.backend_tokenizer
    table, ascii_only = chat.token_bytes
    if table is not None and texts and (not ascii_only or all(t.isascii() for t in texts)):
        ids, bounds = _flat([e.ids for e in bt.encode_batch_fast(texts, add_special_tokens=False)])
        offs = summed_offsets(table, ids, bounds, texts)
        if offs is not None:
            probe = bt.encode(texts[0], add_special_tokens=False)
            if np.array_equal(np.asarray(probe.offsets, dtype=np.int64).reshape(-1, 2), offs[:bounds[1]]):
                return ids, offs, bounds
    # The tokenizer's own offsets: what `tok(texts)` calls, without building a BatchEncoding of lists.
    encs = bt.encode_batch(texts, add_special_tokens=False)
    ids, bounds = _flat([e.ids for e in encs])
    offs = np.fromiter(itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encs)),
                       dtype=np.int64, count=2 * len(ids)).reshape(-1, 2)
    return ids, offs, bounds


def _flat(lists: list[list[int]]):
    """One int64 array of many lists end to end, and where each begins (plus the total at the end)."""
    import numpy as np

    lengths = np.fromiter(map(len, lists), np.int64, len(lists))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(bounds[-1])), bounds


def audit_mask(chat: Chat, messages: list[dict], tools, full: str, spans, ids: list[int], mask: list[int],
               where: str = "", offsets=None) -> None:
    """Fail loudly if the mask trains a user or tool-result token, or misses an assistant turn or its end."""
    import numpy as np

    if offsets is None:
        enc = chat.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        if enc["input_ids"] != list(ids):
            raise StageError(f"{where}: token ids do not match the rendering.")
        offsets = enc["offset_mapping"]
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    Layout([full], [spans], np.asarray(ids, dtype=np.int64), offsets, np.array([0, len(offsets)])).audit(
        chat, [messages], np.asarray(mask, dtype=np.int8), [where])


class Layout:
    """Many rendered conversations laid end to end (each shifted past the one before), so that the loss
    mask and its audit run as a few numpy calls per chunk instead of per conversation.

    fulls, spans: each conversation's text and assistant spans; ids, offsets: the (T,) token ids and
    (T, 2) char offsets of all of them end to end (offsets within each one's own text); bounds: where
    each conversation's tokens begin, and T. Positions in the layout are a conversation's own plus its
    `base`."""

    def __init__(self, fulls: list[str], spans: list, ids, offsets, bounds):
        import numpy as np

        self.fulls, self.spans, self.ids, self.bounds = fulls, spans, ids, bounds
        self.base = np.cumsum([0] + [len(f) + 1 for f in fulls])[:-1]  # +1: no token touches the next text
        shift = np.repeat(self.base, np.diff(bounds))
        self.starts, self.ends = offsets[:, 0] + shift, offsets[:, 1] + shift  # non-decreasing
        sp = [np.asarray(s, dtype=np.int64).reshape(-1, 2) + b for s, b in zip(spans, self.base)]
        self.sp = np.concatenate(sp) if sp else np.zeros((0, 2), dtype=np.int64)
        self.sp_of = np.repeat(np.arange(len(fulls)), [len(s) for s in sp])  # each span's conversation

    def mask(self):
        """1 for each token that overlaps an assistant span (what `mask_from_offsets` gives each one)."""
        import numpy as np

        mask = np.zeros(len(self.starts), dtype=np.int8)
        if len(self.sp):
            j = np.searchsorted(self.sp[:, 1], self.starts, side="right")  # the first span ending after the start
            ok = j < len(self.sp)
            mask[ok] = self.ends[ok] > self.sp[j[ok], 0]
        return mask

    def audit(self, chat: Chat, messages: list[list[dict]], mask, wheres: list[str]) -> None:
        """Fail loudly, naming the conversation, if a mask trains a token outside every assistant turn or a
        user's or tool's words, or leaves part of an assistant turn or its end-of-turn token untrained."""
        import numpy as np

        on = np.asarray(mask, dtype=bool)
        tr_s, tr_e = self.starts[on], self.ends[on]
        sp = self.sp

        def fail(pos: int, why: str):
            k = int(np.searchsorted(self.base, pos, side="right")) - 1
            raise StageError(f"{wheres[k]}: {why}")

        def text(a: int, b: int) -> str:
            k = int(np.searchsorted(self.base, a, side="right")) - 1
            return self.fulls[k][a - self.base[k]:b - self.base[k]]

        # 1. Every trained token lies in an assistant span (tokens at a span's edge may carry a newline).
        j = np.searchsorted(sp[:, 1] + 1, tr_e, side="left")  # the first span that could hold the token's end
        inside = j < len(sp)
        inside[inside] = sp[j[inside], 0] - 1 <= tr_s[inside]
        if not inside.all():
            k = int(np.argmin(inside))
            fail(int(tr_s[k]), f"a token outside every assistant turn would be trained: {text(tr_s[k], tr_e[k])!r}.")
        # 2. Each span is covered, its end-of-turn token included.
        t0 = np.searchsorted(self.ends, sp[:, 0], side="right")  # the first token ending after the span starts
        t1 = np.maximum(t0, np.searchsorted(self.starts, sp[:, 1], side="left"))  # the first starting at its end
        trained_before = np.concatenate([[0], np.cumsum(on)])
        short = (t1 > t0) & (trained_before[t1] - trained_before[t0] < t1 - t0)
        if short.any():
            a, b = sp[int(np.argmax(short))]
            fail(int(a), f"assistant text {text(a, b)[:60]!r} is not fully trained.")
        if chat.eot:
            eot = chat.eot.strip()
            for (a, b), k, lo, hi in zip(sp.tolist(), self.sp_of.tolist(), t0.tolist(), t1.tolist()):
                base = int(self.base[k])
                if (hi > lo and self.fulls[k].endswith(chat.eot, a - base, b - base)
                        and not chat.decoded(int(self.ids[hi - 1])).endswith(eot)):
                    fail(a, f"the end-of-turn {chat.eot!r} of an assistant turn is not trained.")
        # 3. No user or tool-result content is trained.
        found = []  # (start, end) of each occurrence of a user's or tool's words, in the layout
        for k, msgs in enumerate(messages):
            full, base = self.fulls[k], int(self.base[k])
            for m in msgs:
                if m["role"] in ("user", "tool") and isinstance(m.get("content"), str) and len(m["content"].strip()) >= 8:
                    words = m["content"].strip()
                    start = full.find(words)
                    while start >= 0:
                        found.append((base + start, base + start + len(words)))
                        start = full.find(words, start + len(words))
        if found:
            occ = np.asarray(found, dtype=np.int64)
            j = np.searchsorted(sp[:, 1], occ[:, 1], side="left")  # the first span ending at or after it
            in_span = j < len(sp)
            in_span[in_span] = sp[j[in_span], 0] <= occ[in_span, 0]
            overlap = np.searchsorted(tr_s, occ[:, 1], side="left") - np.searchsorted(tr_e, occ[:, 0], side="right")
            bad = ~in_span & (overlap > 0)
            if bad.any():
                a, b = occ[int(np.argmax(bad))]
                k = int(np.searchsorted(self.base, a, side="right")) - 1
                role = next(m["role"] for m in messages[k] if isinstance(m.get("content"), str)
                            and m["content"].strip() == text(a, b))
                fail(int(a), f"{role} text {text(a, b)[:40]!r} would be trained.")


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
