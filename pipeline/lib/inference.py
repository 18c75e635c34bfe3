"""Models for inference: which models an eval scores, loading them in 16 bits, greedy replies, freeing memory, and
replies reused where a model and everything its replies depend on are unchanged."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.lib.common import rel, sha256_file, versions, write_json_atomic
from pipeline.lib.generation import greedy
from pipeline.lib.models import CACHE, base_16bit, check_16bit, load_for_inference, resolve
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


# --- replies reused: a model that did not change is not decoded again -------------------------------------

REPLIES = Path(os.environ.get("TOOLTUNE_REPLIES", CACHE / "replies"))
DIGESTS = CACHE / "weights-digests.json"
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf", "config.json")


def local_snapshot(path: str) -> Path | None:
    """The folder holding a checkpoint's files: `path` itself, or a hub name's snapshot in the local hub cache."""
    if Path(path).is_dir():
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception:  # noqa: BLE001 - not downloaded, not a hub name: no digest, no reuse
        return None


def weights_digest(path: str) -> str | None:
    """sha256 over a checkpoint's weight files and config.json; None where they cannot be read (then replies are
    never reused). Each file's hash is remembered by (path, size, mtime) in .cache/, so a 16 GB base is read
    once, not on every run."""
    import hashlib

    folder = local_snapshot(path)
    files = sorted({f for pattern in WEIGHT_FILES for f in folder.glob(pattern) if f.is_file()}) if folder else []
    if not files:
        return None
    try:
        known = json.loads(DIGESTS.read_text())
    except (OSError, ValueError):
        known = {}
    h, changed = hashlib.sha256(), False
    for f in files:
        st = f.stat()
        memo = f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if memo not in known:
            known[memo], changed = sha256_file(f), True
        h.update(f"{f.name}:{known[memo]}".encode())
    if changed:
        write_json_atomic(DIGESTS, known)
    return h.hexdigest()


def decode_path(recipe: Recipe) -> dict:
    """What decides the arithmetic of greedy decoding on this machine: the dtype and device the eval loads with, the
    CPU's vector instructions torch dispatches to, its threads, the libraries. Replies are never reused across
    these: a bf16 path and an fp32 path can choose different tokens."""
    import platform

    import torch

    from pipeline.lib.backends import cuda_available

    on_gpu = cuda_available()
    kw = load_kwargs(recipe, on_gpu)
    return {"dtype": str(kw["dtype"]), "device": torch.cuda.get_device_name(0) if on_gpu else "cpu",
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "libraries": versions()}


def replies_key(path: str, tok, chat: Chat, prompts: list[str], recipe: Recipe, max_new_tokens: int) -> tuple[str | None, dict]:
    """The key of one model's replies to these prompts, and its parts: the weights' digest, the prompts as token ids
    (the eval turns, the tools, the template and the tokenizer all end up in them), the decoding settings, the
    generation code, the decode path (decode_path)."""
    import hashlib

    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    code = hashlib.sha256()
    for src in (Path(__file__).with_name("generation.py"), Path(__file__)):
        code.update(src.read_bytes())
    parts = {"weights": weights_digest(path),
             "prompts": hashlib.sha256(json.dumps(ids).encode()).hexdigest(),
             "decoding": {"greedy": True, "max_new_tokens": max_new_tokens, "end_of_turn": chat.eot,
                          "batch_size": recipe.eval.batch_size},
             "code": code.hexdigest(), "path": decode_path(recipe)}
    if parts["weights"] is None:
        return None, parts
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest(), parts


def cached_replies(key: str | None, n: int) -> list[str] | None:
    """The replies stored under `key`, if they are whole (one per prompt); None otherwise."""
    if key is None:
        return None
    try:
        data = json.loads((REPLIES / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    replies = data.get("replies")
    if data.get("key") != key or not isinstance(replies, list) or len(replies) != n or not all(isinstance(r, str) for r in replies):
        return None
    return replies


def store_replies(key: str | None, parts: dict, replies: list[str], seconds: float) -> None:
    if key is None:
        return
    write_json_atomic(REPLIES / f"{key}.json", {"key": key, "parts": parts, "seconds": round(seconds, 1), "replies": replies})
