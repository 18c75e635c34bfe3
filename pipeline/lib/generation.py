"""Batched greedy generation that computes the shared prompt prefix once.

Every eval prompt of one agent starts with the same system prompt and tool list (~680 of ~900
tokens with the bundled data), and on a CPU the prompt's forward pass costs more than decoding
the reply. So the common token prefix is run once, its KV cache is copied for each batch, and only
each prompt's own suffix is fed (left-padded after the prefix; position ids come from the
attention mask, so padding shifts nothing). Greedy outputs equal those of plain generation
(tests/test_generation.py).

The KV cache is preallocated (transformers' StaticCache) for prefix + prompt + reply: the default
DynamicCache concatenates every layer's keys and values at every step, which copies the whole cache
per generated token; profiled on 16 eval prompts (~900-token cache), those copies were 39% of the
time, more than the matrix products.
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


def greedy(model, tok, prompts: list[str], eot_id: int, max_new_tokens: int, batch_size: int = 8,
           label: str | None = None, share_prefix: bool = True, margins: list | None = None,
           static: bool = True) -> list[list[int]]:
    """Generated token ids per prompt (up to and including the end-of-turn token).

    With `margins` (a list), also appends per prompt the gap between the best and second-best logit
    at each generated step: how close greedy decoding came to choosing another token."""
    import torch

    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    if not ids:
        return []
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
