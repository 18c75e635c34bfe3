"""The loss mask: which characters (then tokens) of a rendered conversation are the assistant's to learn,
and the audit that proves every trained run ends with the end-of-turn token."""

from __future__ import annotations

import os

from pipeline.lib.common import StageError
from pipeline.lib.template import Chat, adapt

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
