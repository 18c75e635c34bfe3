"""Conversations longer than max_seq_length: the window rule training and the eval share.

A window keeps the conversation's system prompt (and so its tools), then as much of the recent history
as fits: it begins at the earliest user turn from which it fits (at an assistant turn, as context, where
no user turn does), and it ends with an assistant turn. Training cuts a long conversation into windows
that each train the assistant turns not trained before (`split`); the eval gives each turn the window
that training gives the first turn it trains (`fit_start` with the turn as the window's end).
"""

from __future__ import annotations

from collections.abc import Callable


class NoFit(Exception):
    """Even the system prompt, the tools and this one turn (with the messages that lead to it from the last
    turn boundary) are longer than max_seq_length."""

    def __init__(self, turn: int, tokens: int):
        self.turn, self.tokens = turn, tokens
        super().__init__(f"assistant turn {turn} needs {tokens} tokens with only the system prompt and tools before it")


def head_len(msgs: list[dict]) -> int:
    """How many leading system messages every window keeps."""
    n = 0
    while n < len(msgs) and msgs[n]["role"] == "system":
        n += 1
    return n


def _first(candidates: list[int], ok: Callable[[int], bool]) -> int | None:
    """The first candidate for which `ok` holds, where it holds for every candidate after one it holds for."""
    lo, hi = 0, len(candidates)
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(candidates[mid]):
            hi = mid
        else:
            lo = mid + 1
    return candidates[lo] if lo < len(candidates) else None


def fit_start(msgs: list[dict], end: int, length: Callable[[list[dict]], int], max_len: int) -> int:
    """The index the window that ends with message `end` (an assistant turn) begins at: the earliest user
    turn after the system prompt from which head + msgs[start:end + 1] is at most `max_len` tokens, else the
    earliest such assistant turn after the last user turn. Raises NoFit where none fits."""
    head = head_len(msgs)

    def ok(s: int) -> bool:
        return length(msgs[:head] + msgs[s:end + 1]) <= max_len

    users = [i for i in range(head, end) if msgs[i]["role"] == "user"]
    if not users or users[0] != head:
        users = [head, *users]  # the whole history, whatever it opens with
    start = _first(users, ok)
    if start is None:
        after = [i for i in range(users[-1] + 1, end) if msgs[i]["role"] == "assistant"]
        start = _first(after, ok)
    if start is None:
        last = max([i for i in range(head, end) if msgs[i]["role"] in ("user", "assistant")], default=head)
        raise NoFit(end, length(msgs[:head] + msgs[last:end + 1]))
    return start


def split(msgs: list[dict], length: Callable[[list[dict]], int], max_len: int) -> list[tuple[int, int, int]]:
    """Windows (start, end, first_trained) that train every assistant turn once: each begins where the first
    turn it trains gets the most history that fits (`fit_start`), and runs on through as many later turns as
    still fit. A window's messages are msgs[:head] + msgs[start:end + 1]; it trains the assistant turns from
    index first_trained on. Raises NoFit for a turn that fits in no window."""
    head = head_len(msgs)
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]

    def fits(start: int, end: int) -> bool:
        return length(msgs[:head] + msgs[start:end + 1]) <= max_len

    out, k = [], 0
    while k < len(turns):
        first = turns[k]
        try:
            start = fit_start(msgs, first, length, max_len)
        except NoFit:
            raise NoFit(*max(((e.turn, e.tokens) for e in _misfits(msgs, turns[k:], length, max_len)),
                             key=lambda t: t[1])) from None
        later = turns[k + 1:]
        # Run on through the later turns while the window still fits (a longer window is never shorter).
        first_over = _first(list(range(len(later))), lambda j, s=start, ts=later: not fits(s, ts[j]))
        n_more = len(later) if first_over is None else first_over
        end = later[n_more - 1] if n_more else first
        out.append((start, end, first))
        k += 1 + n_more
    return out


def _misfits(msgs: list[dict], turns: list[int], length: Callable[[list[dict]], int], max_len: int) -> list[NoFit]:
    """Every turn of `turns` that fits in no window, with what its shortest window needs."""
    out = []
    for t in turns:
        try:
            fit_start(msgs, t, length, max_len)
        except NoFit as e:
            out.append(e)
    return out


def describe(t: dict) -> str:
    """What data.too_long did, in a few words (the count report's `too_long` section)."""
    if t["policy"] == "split":
        done = f"split into {t['windows']} windows" if t["windows"] else "none to split"
        left = f", {t['history_tokens_left_out']:,} history tokens left out of their windows" if t["history_tokens_left_out"] else ""
        return f"data.too_long=split: {done}, every assistant turn trained once{left}"
    if t["policy"] == "drop":
        return (f"data.too_long=drop: {t['dropped']} dropped, {t['dropped_tokens']:,} tokens "
                f"({t['dropped_trained_tokens']:,} trained) not used")
    return "data.too_long=fail"
