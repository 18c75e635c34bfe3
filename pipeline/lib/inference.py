"""Models for inference: which models an eval scores, loading them in 16 bits, greedy replies, freeing memory."""

from __future__ import annotations

from pathlib import Path

from pipeline.lib.common import rel
from pipeline.lib.generation import greedy
from pipeline.lib.models import base_16bit, check_16bit, load_for_inference, resolve
from pipeline.lib.recipe import Recipe
from pipeline.lib.template import Chat


def generate(model, tok, chat: Chat, prompts: list[str], recipe: Recipe, label: str, max_new_tokens: int) -> list[str]:
    """Greedy replies (shared prompt prefix computed once), decoded up to the end-of-turn token.

    No bf16 autocast here even where training uses it: on these CPUs it made each decode step
    about 2x slower (the KV cache is cast every step), and fp32 keeps greedy decoding reproducible.
    """
    eot_id = tok.convert_tokens_to_ids(chat.eot)
    ids = greedy(model, tok, prompts, eot_id, max_new_tokens, recipe.eval.batch_size, label=label)
    return [tok.decode([t for t in row if t not in (eot_id, tok.pad_token_id)], skip_special_tokens=False) for row in ids]


def load_kwargs(recipe: Recipe, on_gpu: bool) -> dict:
    """How the eval loads both models: in 16 bits, as vLLM serves them (bf16 on a GPU, fp32 on a CPU
    for reproducible greedy decoding), never quantized, whatever the recipe trained with. The tuned model
    is the merged export, the base its 16-bit checkpoint (`export.base_16bit`, already downloaded for the merge)."""
    import torch

    return dict(dtype=torch.bfloat16 if on_gpu else torch.float32, device_map={"": 0} if on_gpu else None,
                trust_remote_code=recipe.trust_remote_code)


def scored_models(recipe: Recipe, run_dir: Path, base: bool = True) -> list[tuple[str, str, str]]:
    """(label, where its weights are, its name) of the models an eval scores: the 16-bit base, then the merged export."""
    merged = run_dir / "export"
    models = [("tuned", str(merged), str(rel(merged)))]
    if base:
        models.insert(0, ("base", resolve(base_16bit(recipe), "model"), base_16bit(recipe)))
    return models


def load_model(path: str, recipe: Recipe, name: str):
    from pipeline.lib.backends import cuda_available

    check_16bit(path, name)
    return load_for_inference(path, **load_kwargs(recipe, cuda_available()))


def free_gpu_memory() -> None:
    """Give the last model's memory back before the next loads (two 16 GB models do not share a 24 GB card)."""
    import gc

    gc.collect()
    from pipeline.lib.backends import cuda_available

    if cuda_available():
        import torch

        torch.cuda.empty_cache()
