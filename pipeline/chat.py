"""One chat template per run: render, mask, and parse tool calls exactly as the server will.

Every stage that turns a conversation into tokens goes through `render()` and `assistant_spans()`,
and the evaluate stage parses generations with `parse()`, whose rules follow the vLLM tool parser
named by the run's tool format (hermes, llama3_json, mistral).
"""

from __future__ import annotations

import bisect
import copy
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
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
    _variables: dict | None = field(default=None, repr=False)

    @classmethod
    def for_recipe(cls, recipe: Recipe, tokenizer) -> "Chat":
        tpl = template_text(recipe, tokenizer)
        tokenizer.chat_template = tpl
        return cls(tokenizer, tpl, detect_format(tpl, recipe.tool_format))

    @property
    def eot(self) -> str:
        return end_of_turn(self.fmt, self.tokenizer)

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


def mask_from_offsets(offsets, spans: list[tuple[int, int]], first: int = 0) -> list[int]:
    """1 for each token that overlaps an assistant span; tokens before index `first` are known to be 0."""
    mask = [0] * len(offsets)
    j = 0
    for t in range(first, len(offsets)):
        s, e = offsets[t]
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        if j == len(spans):
            break
        if s < spans[j][1] and e > spans[j][0]:
            mask[t] = 1
    return mask


def tokenize_with_mask(chat: Chat, messages: list[dict], tools: list[dict] | None):
    """Token ids of the full rendering and a 0/1 mask of the tokens trained on (assistant spans):
    one conversation at a time (`encode_many` does many at once)."""
    full, spans = assistant_spans(chat, messages, tools)
    enc = chat.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    return full, spans, enc["input_ids"], mask_from_offsets(enc["offset_mapping"], spans)


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


_WORKER: tuple | None = None  # (chat, records) inherited by forked render workers


def _render_one(chat: Chat, r: dict) -> tuple[str, list[tuple[int, int]]]:
    try:
        return assistant_spans(chat, r["messages"], r["tools"])
    except StageError as e:
        raise StageError(f"{where(r)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a template that cannot render this conversation
        raise StageError(f"{where(r)}: the chat template cannot render this conversation: {e}") from None


def _render_range(bounds: tuple[int, int]) -> list:
    chat, records = _WORKER
    return [_render_one(chat, r) for r in records[bounds[0]:bounds[1]]]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def encode_many(chat: Chat, records: list[dict], chunk: int = 512, on_rendered=None, workers: int | None = None):
    """(record, full, spans, ids, mask, offsets) for each record, in order: what `tokenize_with_mask`
    returns for each, computed in batches.

    Rendering (the Jinja template, once for the conversation and twice per assistant turn for the
    loss mask) is most of the cost; with more than one chunk it runs in forked worker processes, one
    per usable core, while this process tokenizes. Conversations of one agent begin with the same
    system prompt and tool schemas (76% of the tokens of the bundled data): within each chunk,
    records that share their tool list and system message are cut at the last special token of their
    common rendered prefix; that prefix is tokenized once and the rest in one batched call. Text is
    cut only before a special token, which the tokenizer splits out before anything else, and each
    group is checked: its first record tokenized whole must give the same ids, or the group is
    tokenized whole. `on_rendered(n)` is called as renders finish.
    """
    global _WORKER
    tok = chat.tokenizer
    specials = split_points(tok)
    bounds = [(lo, min(lo + chunk, len(records))) for lo in range(0, len(records), chunk)]
    n_workers = min(workers or usable_cores(), len(bounds))
    pool = None
    if n_workers > 1 and hasattr(os, "fork"):
        import multiprocessing

        chat.render_adapted([{"role": "user", "content": "x"}], None)  # fill the caches the workers inherit
        _WORKER = (chat, records)
        pool = multiprocessing.get_context("fork").Pool(n_workers)
        chunks = pool.imap(_render_range, bounds)
    else:
        chunks = ([_render_one(chat, r) for r in records[lo:hi]] for lo, hi in bounds)
    try:
        for (lo, hi), rendered in zip(bounds, chunks):
            if on_rendered:
                on_rendered(hi - lo)
            yield from _tokenize_chunk(tok, specials, records[lo:hi], rendered)
    finally:
        if pool is not None:
            pool.terminate()
            _WORKER = None


def _tokenize_chunk(tok, specials: list[str], part: list[dict], rendered: list):
    groups: dict = {}
    for k, r in enumerate(part):
        m0 = r["messages"][0] if r["messages"] else {}
        system = m0.get("content") if m0.get("role") == "system" else None
        groups.setdefault((id(r["tools"]), system), []).append(k)
    cut = [""] * len(part)  # the shared prefix text each record is cut after ("" = tokenized whole)
    shared: dict[str, tuple] = {}  # prefix text -> its (ids, offsets)
    for members in groups.values():
        if len(members) < 2:
            continue
        n = shared_cut([rendered[k][0] for k in members], specials)
        if n < 32:
            continue
        head = rendered[members[0]][0][:n]
        if head not in shared:
            enc = tok(head, add_special_tokens=False, return_offsets_mapping=True)
            shared[head] = (list(enc["input_ids"]), list(enc["offset_mapping"]))
        whole = tok(rendered[members[0]][0], add_special_tokens=False)["input_ids"]
        rest = tok(rendered[members[0]][0][n:], add_special_tokens=False)["input_ids"]
        if list(whole) != shared[head][0] + list(rest):
            continue  # this tokenizer merges across the cut: tokenize these whole
        for k in members:
            cut[k] = head
    enc = tok([rendered[k][0][len(cut[k]):] for k in range(len(part))], add_special_tokens=False,
              return_offsets_mapping=True)
    for k, r in enumerate(part):
        full, spans = rendered[k]
        ids, offsets = enc["input_ids"][k], enc["offset_mapping"][k]
        first = 0
        if cut[k]:
            n = len(cut[k])
            p_ids, p_off = shared[cut[k]]
            first = len(p_ids) if (not spans or spans[0][0] >= n) else 0
            ids = p_ids + ids
            offsets = p_off + [(s + n, e + n) for s, e in offsets]
        yield r, full, spans, ids, mask_from_offsets(offsets, spans, first), offsets


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
    ends = [e for _, e in offsets]  # non-decreasing: tokens come left to right
    for a, b in spans:
        t0 = bisect.bisect_right(ends, a)  # the first token ending after a
        covered = []
        for t in range(t0, len(ids)):
            if offsets[t][0] >= b:
                break
            if offsets[t][1] > a:
                covered.append(t)
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
