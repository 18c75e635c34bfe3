"""Batched greedy generation that computes each prompt token once.

Eval prompts share long prefixes: one agent's system prompt and tool list (~680 of ~900 tokens with
the bundled data), and every turn of a conversation repeats the turns before it. On a CPU the prompts'
forward passes cost more than decoding the replies, and a batch's common prefix alone is short when
the tool lists differ. So the prompts are sorted and walked as a trie: one row's KV cache is cut back
to the longest prefix it shares with the next prompt and extended by the rest. Each batch's rows are
copied into one preallocated cache (transformers' StaticCache: the default DynamicCache copies the whole
cache at every generated token, 39% of the time in a profile of 16 eval prompts), right-aligned, and a
greedy loop decodes them with each row's own positions and padding masked out, dropping finished rows
once half of the batch is done. Greedy outputs equal those of plain generation (tests/test_generation.py).
"""

from __future__ import annotations

import contextlib
import copy

from rich.progress import Progress

from pipeline.lib.common import console
from pipeline.lib.packing import MIN_PREFIX


def common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    p = 0
    while p < n and all(s[p] == first[p] for s in seqs):
        p += 1
    return p


@contextlib.contextmanager
def cpu_gqa(model):
    """Let SDPA read grouped KV heads directly on CPU instead of copying them per query head.

    transformers uses SDPA's `enable_gqa` only without an attention mask (on CUDA a mask sends it to
    the slow math kernel anyway) and otherwise repeats K and V for every query head. With padded
    batches on a CPU that copy dominates decoding: for SmolLM2 (9 query, 3 KV heads), batch 16 and
    a 900-token cache, SDPA with `enable_gqa` and the mask took 5.5 ms per layer against 28 ms with
    the copy, with identical outputs. So on CPU we allow it, and restore the library's rule after.
    """
    import torch
    from transformers.integrations import sdpa_attention as sdpa

    if model.device.type != "cpu" or not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        yield
        return
    original = sdpa.use_gqa_in_sdpa
    sdpa.use_gqa_in_sdpa = lambda attention_mask, key, value: key.shape[-1] == value.shape[-1] <= 256
    try:
        yield
    finally:
        sdpa.use_gqa_in_sdpa = original


def static_cache(model, batch: int, length: int, prefix=None):
    """A preallocated cache for `batch` rows of up to `length` tokens, holding `prefix` (a one-row
    cache of the shared prompt prefix) in every row."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=length)
    if prefix is not None:
        for layer, src in zip(cache.layers, prefix.layers):
            layer.update(src.keys.expand(batch, -1, -1, -1).contiguous(),
                         src.values.expand(batch, -1, -1, -1).contiguous())
    return cache


def prompt_ids(tok, prompts: list[str]) -> list[list[int]]:
    return [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]


def greedy(model, tok, prompts: list[str], eot_id: int, max_new_tokens: int, batch_size: int = 8,
           label: str | None = None, share_prefix: bool = True, margins: list | None = None,
           static: bool = True, trie: bool = True) -> list[list[int]]:
    """Generated token ids per prompt (up to and including the end-of-turn token).

    With `margins` (a list), also appends per prompt the gap between the best and second-best logit
    at each generated step: how close greedy decoding came to choosing another token.

    By default the prompts are prefilled through their trie and decoded by tooltune's own loop (`trie_greedy`).
    With `trie=False`, or where the model's cache is not a plain static one (sliding windows), transformers'
    `generate` runs on left-padded batches, their common prefix computed once if `share_prefix`, with a
    preallocated cache if `static` (the benchmark's baselines).
    """
    ids = prompt_ids(tok, prompts)
    if not ids:
        return []
    if trie and min(len(s) for s in ids) > 1 and plain_static_cache(model):
        return trie_greedy(model, ids, eot_id, max_new_tokens, batch_size, label, margins)
    return generate_batches(model, tok, ids, eot_id, max_new_tokens, batch_size, label, share_prefix, margins, static)


def plain_static_cache(model) -> bool:
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    try:
        cache = StaticCache(config=model.config, max_cache_len=8)
    except Exception:  # noqa: BLE001 - an architecture this loop does not know: transformers' generate decodes it
        return False
    return all(type(layer) is StaticLayer for layer in cache.layers)


def lcp(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class TriePrefill:
    """One row's KV cache walked through the prompts in sorted order: each prompt costs only the tokens
    past its longest common prefix with the one before (sorted order makes that the longest with any
    earlier prompt). For the bundled eval's 240 turns: ~37k tokens computed instead of ~150k."""

    def __init__(self, model):
        self.model, self.cache, self.tokens, self.computed = model, None, [], 0

    def extend(self, target: list[int], logits: int = 0):
        """The cache holding `target`; with `logits` > 0, also the logits (fp32) predicting the token after each of
        target's last `logits` positions, which are then computed anew whatever the cache held."""
        import torch
        from transformers import DynamicCache

        keep = min(lcp(self.tokens, target), len(target) - logits)
        if keep <= 0 or self.cache is None:
            self.cache, self.tokens = DynamicCache(config=self.model.config), []
        elif keep < len(self.tokens):
            self.cache.crop(keep - len(self.tokens))  # a negative length: drop that many from the end
            self.tokens = self.tokens[:keep]
        new = target[len(self.tokens):]
        out = None
        if new:
            with torch.no_grad():
                out = self.model(input_ids=torch.tensor([new], device=self.model.device), past_key_values=self.cache,
                                 use_cache=True, logits_to_keep=max(logits, 1)).logits[0].float()
            self.tokens = list(target)
            self.computed += len(new)
        return (self.cache, out) if logits else self.cache


def forced_greedy(model, ids: list[list[int]], references: list[list[int]]) -> list[list[int]]:
    """What greedy decoding by `model` gives for each prompt, checked against a reference reply in one
    teacher-forced pass instead of generating: the reference itself where the model's choice equals it at every
    step, else the reference up to the first step where it differs plus the model's own token there (what
    generation would have produced up to that point). The prompts go through the trie (TriePrefill)."""
    trie = TriePrefill(model)
    out = []
    for i in sorted(range(len(ids)), key=lambda i: ids[i]):
        ref = references[i]
        if not ref:
            out.append((i, []))
            continue
        _, logits = trie.extend(ids[i] + ref[:-1], logits=len(ref))
        choice = logits.argmax(-1).tolist()
        j = next((k for k, (a, b) in enumerate(zip(choice, ref)) if a != b), None)
        out.append((i, list(ref) if j is None else ref[:j] + [choice[j]]))
    return [row for _, row in sorted(out)]


def trie_greedy(model, ids: list[list[int]], eot_id: int, max_new_tokens: int, batch_size: int,
                label: str | None, margins: list | None) -> list[list[int]]:
    """Greedy decoding with every prompt prefilled through the trie (all but its last token), each batch's
    rows copied left-aligned-to-the-right into one preallocated cache, and a decode loop that feeds each
    row's own position, masks its padding, and drops finished rows once half of the batch is done.

    Outputs equal transformers' `generate` one prompt at a time (tests/test_generation.py)."""
    import torch
    from transformers import StaticCache

    order = sorted(range(len(ids)), key=lambda i: ids[i])
    trie = TriePrefill(model)
    out: list[list[int]] = [[] for _ in ids]
    gaps_of: dict[int, list[float]] = {}
    dev = model.device
    with Progress(console=console, transient=True, disable=label is None) as progress:
        task = progress.add_task(f"generating ({label})", total=len(ids))
        for k in range(0, len(order), batch_size):
            rows = order[k:k + batch_size]
            width = max(len(ids[i]) - 1 for i in rows)  # prompt tokens held in the cache, the last one is fed
            cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens + 1)
            valid = torch.zeros(len(rows), width + max_new_tokens + 1, dtype=torch.bool, device=dev)
            for b, i in enumerate(rows):
                row = trie.extend(ids[i][:-1])
                n = len(ids[i]) - 1
                for layer, src in zip(cache.layers, row.layers):
                    if not layer.is_initialized:
                        shape = (len(rows), *src.keys.shape[1:2], 1, src.keys.shape[-1])
                        layer.lazy_initialization(src.keys[:, :, :1].expand(shape), src.values[:, :, :1].expand(shape))
                        layer.cumulative_length.fill_(width)
                    layer.keys[b, :, width - n:width] = src.keys[0, :, :n]
                    layer.values[b, :, width - n:width] = src.values[0, :, :n]
                valid[b, width - n:width] = True
            live = list(range(len(rows)))  # batch row -> position in `rows`
            nxt = torch.tensor([[ids[i][-1]] for i in rows], device=dev)
            pos = torch.tensor([[len(ids[i]) - 1] for i in rows], device=dev)
            produced: list[list[int]] = [[] for _ in rows]
            gaps: list[list[float]] = [[] for _ in rows]
            finished = [False] * len(rows)
            neg = torch.finfo(model.dtype).min
            for step in range(max_new_tokens):
                t = width + step
                valid[:, t] = True
                mask = torch.zeros(valid.shape, dtype=model.dtype, device=dev).masked_fill_(~valid, neg)[:, None, None, :]
                with torch.no_grad(), cpu_gqa(model):
                    logits = model(input_ids=nxt, attention_mask=mask, position_ids=pos, past_key_values=cache,
                                   use_cache=True, logits_to_keep=1).logits[:, -1].float()
                best = logits.argmax(-1)
                if margins is not None:
                    top2 = logits.topk(2, dim=-1).values
                    for b, g in zip(live, (top2[:, 0] - top2[:, 1]).tolist()):
                        if not finished[b]:
                            gaps[b].append(g)
                for b, tok_id in zip(live, best.tolist()):
                    if not finished[b]:
                        produced[b].append(tok_id)
                        finished[b] = tok_id == eot_id
                alive = [j for j, b in enumerate(live) if not finished[b]]
                if not alive:
                    break
                nxt, pos = best[:, None], pos + 1
                if 2 * len(alive) <= len(live):  # half or more finished: drop them from the batch
                    keep = torch.tensor(alive, device=dev)
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys.index_select(0, keep), layer.values.index_select(0, keep)
                        layer.batch_size = len(keep)
                    valid, nxt, pos = valid.index_select(0, keep), nxt.index_select(0, keep), pos.index_select(0, keep)
                    live = [live[j] for j in keep.tolist()]
            for b, i in enumerate(rows):
                out[i] = produced[b]
                gaps_of[i] = gaps[b]
            progress.advance(task, len(rows))
    if margins is not None:
        margins.extend(gaps_of[i] for i in range(len(ids)))
    return out


def generate_batches(model, tok, ids: list[list[int]], eot_id: int, max_new_tokens: int, batch_size: int,
                     label: str | None, share_prefix: bool, margins: list | None, static: bool) -> list[list[int]]:
    """transformers' `generate` on left-padded batches of similar length, the prompts' common prefix (if
    `share_prefix`) computed once and copied into each batch's cache."""
    import torch

    pad = tok.pad_token_id if tok.pad_token_id is not None else eot_id
    p = common_prefix_len(ids) if share_prefix and len(ids) > 1 else 0
    p = min(p, min(len(s) for s in ids) - 1)  # every prompt keeps at least one token of its own
    cache = None
    if p >= MIN_PREFIX:
        with torch.no_grad():
            cache = model(input_ids=torch.tensor([ids[0][:p]], device=model.device), use_cache=True).past_key_values
    else:
        p = 0
    # Plain greedy decoding, whatever the checkpoint's generation_config.json asks for (Qwen2.5's
    # repetition_penalty 1.05 would otherwise apply to one model of a base-vs-tuned comparison).
    from transformers import GenerationConfig

    # transformers fills every field left unset from the checkpoint's file, so the neutral values are explicit.
    plain = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, temperature=1.0, top_p=1.0,
                             top_k=50, repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=eot_id,
                             pad_token_id=pad, output_scores=margins is not None, return_dict_in_generate=True)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[list[int]] = [[] for _ in ids]
    by_prompt: dict[int, list[float]] = {}
    with Progress(console=console, transient=True, disable=label is None) as progress:
        task = progress.add_task(f"generating ({label})", total=len(ids))
        for k in range(0, len(order), batch_size):
            batch = order[k:k + batch_size]
            width = max(len(ids[i]) - p for i in batch)
            rows, masks = [], []
            for i in batch:
                suffix = ids[i][p:]
                gap = width - len(suffix)
                rows.append(ids[i][:p] + [pad] * gap + suffix)
                masks.append([1] * p + [0] * gap + [1] * len(suffix))
            if static:
                kwargs = {"past_key_values": static_cache(model, len(batch), p + width + max_new_tokens, cache)}
            elif cache is not None:  # transformers' default DynamicCache (kept for the benchmark's baseline)
                c = copy.deepcopy(cache)
                c.batch_repeat_interleave(len(batch))
                kwargs = {"past_key_values": c}
            else:
                kwargs = {}
            input_ids = torch.tensor(rows, device=model.device)
            with torch.no_grad(), cpu_gqa(model):
                gen = model.generate(input_ids=input_ids, attention_mask=torch.tensor(masks, device=model.device),
                                     generation_config=plain, **kwargs)
            seqs = gen.sequences[:, input_ids.shape[1]:].tolist()
            if margins is not None:
                top2 = torch.stack([s.float().topk(2, dim=-1).values for s in gen.scores], dim=1)  # [b, steps, 2]
                gaps = (top2[..., 0] - top2[..., 1]).tolist()
            for b, (i, row) in enumerate(zip(batch, seqs)):
                cut = row.index(eot_id) + 1 if eot_id in row else len(row)
                out[i] = row[:cut]
                if margins is not None:
                    by_prompt[i] = gaps[b][:cut]
            progress.advance(task, len(batch))
    if margins is not None:
        margins.extend(by_prompt[i] for i in range(len(ids)))
    return out


def decoding_defaults(gen) -> dict:
    """What a server samples with when a request sets nothing, as the generation config says."""
    keys = ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")
    return {k: getattr(gen, k) for k in keys if getattr(gen, k, None) is not None}


def decoding_note(gen) -> str:
    """The model card's sentence on decoding, written from the saved generation config itself."""
    d = decoding_defaults(gen)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    if d.get("do_sample"):
        how = ("samples with " + ", ".join(f"{k}={v}" for k, v in d.items() if k != "do_sample")
               + " (the base model's defaults, kept)")
    else:
        how = "decodes greedily"
    return (f"`generation_config.json` {how} when a request sets nothing, and stops at token ids {eos} "
            f"(the end of turn first). The evaluation decoded greedily: send `temperature: 0` to reproduce it.")
