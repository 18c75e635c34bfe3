"""Counting at speed: conversations rendered, tokenized, masked and audited in chunks by forked workers."""

from __future__ import annotations

import gc
import itertools
import os

from pipeline.lib.common import StageError
from pipeline.lib.mask import Layout, assistant_spans
from pipeline.lib.template import Chat, adapt


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
        full, spans = fast(r["messages"], r["tools"]) if fast is not None else assistant_spans(chat, r["messages"], r["tools"])
        if r.get("train_from"):  # a window of a longer conversation: its earlier assistant turns are context
            before = adapt(r["messages"][:r["train_from"]], chat.fmt)
            spans = spans[sum(1 for m in before if m["role"] == "assistant"):]
        return full, spans
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
