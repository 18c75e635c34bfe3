"""The plan: memory and time a recipe needs on each GPU class, from shapes alone (no GPU, no hub).

GPU classes for the time and memory estimates, with where each number comes from.

Throughput is modelled, not measured here: LoRA on a frozen base costs about 4N FLOPs per token
(forward 2N, backward through the activations 2N; no weight gradients for the base), and a
well-fed single GPU reaches a model-FLOPs utilization (MFU) of about 35% with Unsloth's kernels on
7-8B models (Unsloth's published Llama 3.1 8B QLoRA runs; torchtune's single-device QLoRA reports).
`make bench` measures the CPU figures; `make gpu-check` and `make gpu-rehearsal` measure them on a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from pipeline.lib.common import StageError, console, rel
from pipeline.lib.recipe import ROOT, Recipe, glob_paths

GPUS = {
    # name: (memory GiB, dense bf16 tensor TFLOP/s from the vendor's datasheet)
    "rtx4090": (24, 165.2),
    "a100-40gb": (40, 312.0),
    "a100-80gb": (80, 312.0),
    "h100": (80, 989.0),
    "h200": (141, 989.0),
}
MFU = 0.35


def tokens_per_second(gpu: str, n_params: float, load_in_4bit: bool) -> float:
    """Expected training tokens/s for LoRA on a model of n_params parameters."""
    _, tflops = GPUS[gpu]
    # Dequantizing NF4 weights on the fly costs roughly 15% (Dettmers et al. 2023, QLoRA, Table 11 timings).
    penalty = 0.85 if load_in_4bit else 1.0
    return tflops * 1e12 * MFU * penalty / (4 * n_params)


GIB = 1 << 30
PLAN_GPUS = ("rtx4090", "a100-40gb", "a100-80gb", "h100")
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --- shapes -------------------------------------------------------------------------------
# Facts of the architectures (each model's config.json), so the plan works offline for every
# model a recipe names. Unsloth's bnb-4bit checkpoints share their base model's shapes.
_LLAMA31_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, head_dim=128)
_LLAMA31_70B = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                    num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, head_dim=128)
_MISTRAL_7B_V03 = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768, tie_word_embeddings=False, head_dim=128)
# Qwen2 has biases on q, k and v (model_type qwen2); 7.62B parameters in all.
_QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                  num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False, head_dim=128, model_type="qwen2")
# Phi-3.5-mini fuses qkv and gate_up; Unsloth's copies are "llamafied" (separate q/k/v/gate/up), same counts.
_PHI35_MINI = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=32, vocab_size=32064, tie_word_embeddings=False, head_dim=96)
_LLAMA2_13B = dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40,
                   num_key_value_heads=40, vocab_size=32000, tie_word_embeddings=False, head_dim=128)
_SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, head_dim=64)
KNOWN_SHAPES = {
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA31_8B,
    "meta-llama/Meta-Llama-3.1-8B-Instruct": _LLAMA31_8B,
    "unsloth/Meta-Llama-3.1-8B-Instruct": _LLAMA31_8B,
    "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit": _LLAMA31_8B,
    "meta-llama/Llama-3.1-70B-Instruct": _LLAMA31_70B,
    "meta-llama/Meta-Llama-3.1-70B-Instruct": _LLAMA31_70B,
    "unsloth/Meta-Llama-3.1-70B-Instruct": _LLAMA31_70B,
    "unsloth/Meta-Llama-3.1-70B-Instruct-bnb-4bit": _LLAMA31_70B,
    "mistralai/Mistral-7B-Instruct-v0.3": _MISTRAL_7B_V03,
    "unsloth/mistral-7b-instruct-v0.3": _MISTRAL_7B_V03,
    "unsloth/mistral-7b-instruct-v0.3-bnb-4bit": _MISTRAL_7B_V03,
    "Qwen/Qwen2.5-7B-Instruct": _QWEN25_7B,
    "unsloth/Qwen2.5-7B-Instruct": _QWEN25_7B,
    "unsloth/Qwen2.5-7B-Instruct-bnb-4bit": _QWEN25_7B,
    "microsoft/Phi-3.5-mini-instruct": _PHI35_MINI,
    "unsloth/Phi-3.5-mini-instruct": _PHI35_MINI,
    "unsloth/Phi-3.5-mini-instruct-bnb-4bit": _PHI35_MINI,
    "meta-llama/Llama-2-13b-chat-hf": _LLAMA2_13B,
    "meta-llama/Llama-2-13b-hf": _LLAMA2_13B,
    "unsloth/llama-2-13b": _LLAMA2_13B,
    "unsloth/llama-2-13b-bnb-4bit": _LLAMA2_13B,
    "builtin:smollm2-135m-instruct": _SMOLLM2_135M,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _SMOLLM2_135M,
}
_KNOWN_LOWER = {k.lower(): v for k, v in KNOWN_SHAPES.items()}


def read_config(recipe: Recipe) -> dict | None:
    """config.json of the recipe's model: a local folder, then the HF cache (offline), then KNOWN_SHAPES."""
    for name in (recipe.model, recipe.tokenizer):
        if not name or name.startswith("builtin:"):
            continue
        path = Path(name).expanduser()
        path = path if path.is_absolute() else ROOT / path
        if (path / "config.json").is_file():
            try:
                return _text_config(json.loads((path / "config.json").read_text()))
            except (OSError, ValueError):
                pass
    if "/" in recipe.model and not recipe.model.startswith((".", "/", "~")):
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(recipe.model, "config.json")
            if isinstance(cached, str):
                return _text_config(json.loads(Path(cached).read_text()))
        except Exception:  # no huggingface_hub, an odd repo id, a broken cache file: fall back to the table
            pass
    shapes = _KNOWN_LOWER.get(recipe.model.lower())
    return dict(shapes) if shapes else None


def _text_config(cfg: dict) -> dict:
    # Multimodal configs (Gemma 3, Llama 4) keep the language model's shapes under text_config.
    return cfg.get("text_config", cfg) if "hidden_size" not in cfg else cfg


def _dims(cfg: dict) -> tuple[int, int, int, int, int, int, int]:
    h, i, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    a = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or a
    d = cfg.get("head_dim") or h // a
    return h, i, n, a, kv, d, cfg["vocab_size"]


def _linears(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) features of the seven projections of one Llama-shaped block."""
    h, i, _, a, kv, d, _ = _dims(cfg)
    return {"q_proj": (h, a * d), "k_proj": (h, kv * d), "v_proj": (h, kv * d), "o_proj": (a * d, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def params_from_config(cfg: dict) -> dict:
    """Parameter counts by module from the shapes (Llama-shaped blocks: Llama, Mistral, Qwen2, Phi-3, SmolLM2)."""
    h, _, n, a, kv, d, vocab = _dims(cfg)
    lin = _linears(cfg)
    attention = n * sum(lin[k][0] * lin[k][1] for k in PROJ[:4])
    if cfg.get("attention_bias") or cfg.get("model_type") == "qwen2":
        attention += n * (a * d + 2 * kv * d)
    mlp = n * sum(lin[k][0] * lin[k][1] for k in PROJ[4:])
    norms = (2 * n + 1) * h  # two RMSNorms per block plus the final one
    embeddings = vocab * h
    lm_head = 0 if cfg.get("tie_word_embeddings") else vocab * h
    total = embeddings + attention + mlp + norms + lm_head
    return {"total": total, "embeddings": embeddings, "attention": attention, "mlp": mlp, "norms": norms,
            "lm_head": lm_head, "linear": attention + mlp}


def lora_params(cfg: dict, r: int, target_modules: list[str]) -> int:
    """Trainable LoRA parameters: A (r x in) + B (out x r) = r * (in + out) per targeted linear per layer."""
    lin = _linears(cfg)
    return cfg["num_hidden_layers"] * sum(r * (lin[m][0] + lin[m][1]) for m in target_modules if m in lin)


# --- memory -------------------------------------------------------------------------------
# NF4 with double quantization (Dettmers et al. 2023, QLoRA §3): 4 bits per weight, one 8-bit absmax
# per 64 weights (0.125 bit), one fp32 constant per 256 absmax blocks (32/(64*256) = 0.002 bit).
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # = 4.127
# LoRA A/B are kept in fp32 (PEFT's autocast_adapter_dtype=True, Unsloth alike): 4 B weight + 4 B grad,
# and no separate master copy is needed. Adam's two states: 8-bit (bitsandbytes) 2 B, 32-bit 8 B per param.
LORA_WEIGHT_BYTES = 4
# Full fine-tune in mixed precision (ZeRO paper, Rajbhandari et al. 2020, "16Ψ"): 16-bit weight 2 +
# 16-bit grad 2 + fp32 master 4 + Adam m, v 8 = 16 B per parameter.
FULL_FT_BYTES = 16
# During the backward pass of one (recomputed) layer its stored activations and the gradients of
# the same tensors are alive together: about twice the layer's stored activations.
BACKWARD_WORKING_SET = 2
# The loss: Unsloth's fused and torchtune's chunked cross-entropy upcast one slice of the logits
# at a time (torchtune: 8 chunks); plain HF upcasts all of them to fp32 and keeps the log-softmax.
LOSS_CHUNKS = 8
# The CUDA context and cuBLAS workspaces (~0.5 GiB, outside PyTorch's own counters) plus what
# PyTorch's caching allocator reserves beyond what is allocated (~0.25 GiB on these workloads).
CUDA_CONTEXT = 0.5 * GIB
ALLOCATOR_SLACK = 0.25 * GIB


def layer_activation_bytes(cfg: dict, batch: int, seq: int, flash: bool = True) -> int:
    """Stored activations of one block in 16-bit, no recomputation.

    Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", §4.1)
    count s*b*h*(34 + 5*a*s/h) bytes for a GPT block (LayerNorm, MHA, 4h GeLU MLP, dropout). The same
    count for a Llama block (RMSNorm, GQA, SwiGLU, no dropout), in elements per token:
      two norm inputs 2h; q/k/v input h; Q, K, V (kept by the attention kernel) h + 2*kv*d;
      attention output (o_proj input) h; MLP input h; gate, up, silu(gate), product 4i.
    The a*s*s score matrices (5*a*s^2*b bytes) exist only with eager attention: SDPA, flash
    attention and Unsloth never materialize them.
    """
    h, i, _, a, kv, d, _ = _dims(cfg)
    per_token = 2 * h + h + (a * d + 2 * kv * d) + h + h + 4 * i
    out = 2 * per_token * batch * seq
    if not flash:
        out += 5 * a * seq * seq * batch
    return out


def estimate(cfg: dict, recipe: Recipe, batch: int, seq: int, *, bits: int, grad_ckpt: bool, optim_bits: int,
             full_finetune: bool = False, chunked_loss: bool | None = None, offload_ckpt: bool | None = None) -> dict:
    """Peak VRAM in bytes, by component.

    chunked_loss None: chunked unless recipe.backend is hf/cpu. offload_ckpt None: on when
    checkpointing with Unsloth (backend auto/unsloth): its "unsloth" gradient checkpointing keeps
    the layer inputs in CPU RAM, not on the GPU.
    """
    p = params_from_config(cfg)
    h, _, n, _, _, _, vocab = _dims(cfg)
    kept_16bit = p["embeddings"] + p["lm_head"] + p["norms"]
    out: dict[str, float] = {}
    if full_finetune:
        # Every parameter trains: weights, grads, master and Adam states, 16 B each (see FULL_FT_BYTES).
        out["weights"] = 2 * p["total"]
        out["gradients"] = 2 * p["total"]
        out["optimizer"] = (FULL_FT_BYTES - 4) * p["total"]
        trainable = p["total"]
    else:
        if bits == 4:  # bitsandbytes quantizes nn.Linear only; embeddings, lm_head and norms stay 16-bit
            out["weights"] = p["linear"] * NF4_BITS / 8 + 2 * kept_16bit
        else:
            out["weights"] = p["total"] * bits / 8
        trainable = lora_params(cfg, recipe.lora_r, recipe.lora.target_modules)
        out["lora_weights"] = LORA_WEIGHT_BYTES * trainable
        out["lora_gradients"] = LORA_WEIGHT_BYTES * trainable
        out["optimizer"] = (2 if optim_bits == 8 else 8) * trainable
    layer = layer_activation_bytes(cfg, batch, seq)
    offload = grad_ckpt and (recipe.backend in ("auto", "unsloth") if offload_ckpt is None else offload_ckpt)
    if grad_ckpt:  # keep each layer's input (2*s*b*h bytes); recompute one layer at a time in backward
        stored = n * 2 * seq * batch * h
        out["activations"] = 0 if offload else stored
    else:
        stored = 0
        out["activations"] = n * layer
    chunked = recipe.backend not in ("hf", "cpu") if chunked_loss is None else chunked_loss
    logits = 2 * batch * seq * vocab + (4 * batch * seq * vocab / LOSS_CHUNKS if chunked else 2 * 4 * batch * seq * vocab)
    backward = (BACKWARD_WORKING_SET if grad_ckpt else BACKWARD_WORKING_SET - 1) * layer
    # The loss runs before the backward pass reaches the layers and its logits are freed by then,
    # so the two transients do not add: the peak holds whichever is larger.
    out["peak_transient"] = max(logits, backward)
    out["cuda_overhead"] = CUDA_CONTEXT + ALLOCATOR_SLACK
    out = {k: int(v) for k, v in out.items()}
    total = sum(out.values())
    return {"components": out, "total": total, "torch_peak": total - int(CUDA_CONTEXT), "trainable": trainable,
            "detail": {"logits_and_loss": int(logits), "layer_backward": int(backward),
                       "checkpoints_in_cpu_ram": int(stored) if offload else 0,
                       "transient": "logits and loss" if logits >= backward else "backward of one layer"},
            "settings": {"batch": batch, "seq": seq, "bits": bits, "grad_ckpt": grad_ckpt, "optim_bits": optim_bits,
                         "full_finetune": full_finetune, "chunked_loss": chunked, "offload_ckpt": offload}}


def recipe_settings(recipe: Recipe) -> dict:
    """What training on a GPU will do with this recipe: the load and train stages' own
    `training_settings`, for the backend the recipe takes on an NVIDIA GPU."""
    from pipeline.lib.backends import gpu_backend, training_settings

    return training_settings(recipe, gpu_backend(recipe)).to_dict()


def make_it_fit(cfg: dict, recipe: Recipe, s: dict, capacity: float) -> str:
    """Apply, in order, the changes that cut memory most for least harm; name the first set that fits."""
    s = dict(s)
    changes: dict[str, str] = {}  # key -> its latest label, so halving twice reads as one change
    steps = []
    if not s["grad_ckpt"]:
        steps.append(("train.gradient_checkpointing=true", {"grad_ckpt": True}))
    if s["bits"] != 4:
        steps.append(("load_in_4bit=true", {"bits": 4}))
    b = s["batch"]
    while b > 1:
        b = max(1, b // 2)
        steps.append((f"train.batch_size={b} (raise grad_accum to keep the step)", {"batch": b}))
    q = s["seq"]
    while q > 512:
        q = max(512, q // 2)
        steps.append((f"max_seq_length={q}", {"seq": q}))
    for label, change in steps:
        s.update(change)
        changes[next(iter(change))] = label
        if estimate(cfg, recipe, s["batch"], s["seq"], bits=s["bits"], grad_ckpt=s["grad_ckpt"],
                    optim_bits=s["optim_bits"], chunked_loss=s["chunked_loss"],
                    offload_ckpt=s["grad_ckpt"] and s["backend"] == "unsloth")["total"] <= capacity:
            return "fits with " + ", ".join(changes.values())
    return "does not fit even at 4-bit, batch 1, 512 tokens"


def token_budget(recipe: Recipe, run_dir: Path | None) -> tuple[float | None, str]:
    """Training tokens over all epochs, and where the number comes from."""
    report = run_dir / "count" / "report.json" if run_dir else None
    if report and report.is_file():
        try:
            r = json.loads(report.read_text())
            return r["tokens_per_epoch"] * recipe.train.epochs, f"counted: {rel(report)}"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    paths = glob_paths(recipe.data.train)
    if not paths:
        return None, f"unknown: no file matches {recipe.data.train}"
    lines = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            lines += [line for line in f if line.strip()]
    n = min(len(lines), recipe.data.max_train) if recipe.data.max_train else len(lines)
    sampled = sample_tokens(recipe, lines[:SAMPLE])
    if sampled:
        per_conv, k = sampled
        return n * per_conv * recipe.train.epochs, (f"estimated: {n:,} conversations x {per_conv:,.0f} tokens, the mean of "
                                                     f"{k} counted with the model's tokenizer and template "
                                                     "(run `make count` for the exact figure)")
    tools = _dataset_tools_chars(recipe)
    chars = sum(len(line) + (0 if '"tools"' in line else tools) for line in lines[:n]) / max(1, min(n, len(lines)))
    per_conv = chars / CHARS_PER_TOKEN
    return n * per_conv * recipe.train.epochs, (f"rough: {n:,} conversations x ~{per_conv:,.0f} tokens from their "
                                                 f"characters / {CHARS_PER_TOKEN} (templates differ by up to 40%: run "
                                                 "`make count` for the exact figure)")


# Without the tokenizer: the bundled data's raw lines plus its compact tool schemas, ~6,800 characters
# a conversation, count 2,134 tokens with Qwen2.5's template, 2,240 with Mistral v0.3's and 2,742 with
# Llama 3.1's (which indents the schemas): ~3.1 characters per token in the middle.
CHARS_PER_TOKEN = 3.1
SAMPLE = 64


def _dataset_tools_chars(recipe: Recipe) -> int:
    if not recipe.data.tools:
        return 0
    paths = glob_paths(recipe.data.tools)
    try:
        return len(json.dumps(json.loads(paths[0].read_text(encoding="utf-8")), separators=(",", ":"))) if paths else 0
    except (OSError, ValueError, RecursionError):
        return 0


def sample_tokens(recipe: Recipe, lines: list[str]) -> tuple[float, int] | None:
    """Mean tokens per conversation over `lines`, rendered with the run's template and counted with
    the model's tokenizer, where that tokenizer is on this machine (a local folder or the Hugging Face
    cache; nothing is downloaded). None where it is not, or the lines do not validate."""
    from pipeline.lib.models import BUILTIN, CACHE, in_hf_cache

    name = recipe.tokenizer or recipe.model
    if name in BUILTIN:
        local = (CACHE / name.split(":", 1)[1] / "tokenizer.json").is_file()
    else:
        path = Path(name).expanduser()
        local = (path if path.is_absolute() else ROOT / path).is_dir() or in_hf_cache(name)
    if not local or not lines:
        return None
    from pipeline.lib.conversations import load_tools_file, valid_records
    from pipeline.lib.models import load_tokenizer
    from pipeline.lib.template import Chat

    try:
        tools = load_tools_file(glob_paths(recipe.data.tools)[0]) if recipe.data.tools and glob_paths(recipe.data.tools) else []
        chat = Chat.for_recipe(recipe, load_tokenizer(recipe))
        counts = [len(chat.tokenizer(chat.render(rec["messages"], rec["tools"]), add_special_tokens=False)["input_ids"])
                  for rec in valid_records(lines, tools)]
    except (StageError, OSError, ValueError, KeyError, ImportError):  # an estimate only: fall back to the characters
        return None
    return (sum(counts) / len(counts), len(counts)) if counts else None


# Several GPUs: the configurations `make plan` shows (count, GiB per GPU) and the share of one GPU's speed each
# added GPU brings (gradient all-reduce and, with FSDP, the weights' all-gathers cost some of it; an assumption).
MULTI_GPU = ((2, 24, "rtx4090"), (2, 48, None), (4, 24, "rtx4090"), (8, 80, "a100-80gb"))  # None: no speed on file
SCALING = 0.9


def per_gpu(cfg: dict, est: dict, n: int, sharding: str) -> int:
    """Peak bytes on each of n GPUs. DDP: every GPU holds the whole single-GPU footprint (each its own batch).
    FSDP (full shard): the weights, adapter, its gradients and the optimizer are split n ways; activations and
    transients stay per GPU, plus the gathered weights of the two blocks in flight (the one computing, the next)."""
    c = est["components"]
    if sharding == "ddp" or n == 1:
        return est["total"]
    sharded = sum(c.get(k, 0) for k in ("weights", "lora_weights", "lora_gradients", "optimizer"))
    layers = _dims(cfg)[2]
    in_flight = 2 * c["weights"] / max(1, layers)
    return int(est["total"] - sharded + sharded / n + in_flight)


def multi_gpu_plan(cfg: dict, est: dict, recipe: Recipe, n_params: int, tokens: float | None) -> dict:
    rows = {}
    configs = list(MULTI_GPU)
    if recipe.nproc * recipe.nnodes > 1:
        own = (recipe.nproc * recipe.nnodes, GPUS[recipe.gpu][0], recipe.gpu)
        if own not in configs:
            configs.insert(0, own)
    for n, gib, gpu in configs:
        ddp, fsdp = per_gpu(cfg, est, n, "ddp"), per_gpu(cfg, est, n, "fsdp")
        capacity = gib * GIB
        choice = "ddp" if ddp <= capacity else "fsdp" if fsdp <= capacity else None
        tps = tokens_per_second(gpu, n_params, recipe.load_in_4bit) * n * SCALING if gpu else None
        rows[f"{n}x{gib}"] = {"gpus": n, "gib_each": gib, "ddp_gib": round(ddp / GIB, 2), "fsdp_gib": round(fsdp / GIB, 2),
                              "gpu": gpu, "auto": choice,
                              "hours": round(tokens / tps / 3600, 2) if tokens and tps and choice else None}
    return rows


def sharding_choice(recipe: Recipe, n: int, capacity: float) -> str:
    """`sharding: auto` for n GPUs of `capacity` bytes each: ddp where a whole copy fits one GPU by the plan, else fsdp."""
    if recipe.sharding != "auto":
        return recipe.sharding
    cfg = read_config(recipe)
    if cfg is None or n == 1:
        return "ddp"
    s = recipe_settings(recipe)
    est = estimate(cfg, recipe, s["batch"], s["seq"], bits=s["bits"], grad_ckpt=s["grad_ckpt"], optim_bits=s["optim_bits"],
                   chunked_loss=s["chunked_loss"], offload_ckpt=s["ckpt_offload"])
    return "ddp" if per_gpu(cfg, est, n, "ddp") <= capacity else "fsdp"


def plan(recipe: Recipe, run_dir: Path | None = None) -> dict:
    cfg = read_config(recipe)
    if cfg is None:
        return {"recipe": recipe.name, "model": recipe.model, "known": False,
                "note": f"no shapes for {recipe.model}: no local config.json, not in the HF cache, not in KNOWN_SHAPES"}
    params = params_from_config(cfg)
    s = recipe_settings(recipe)
    est = estimate(cfg, recipe, s["batch"], s["seq"], bits=s["bits"], grad_ckpt=s["grad_ckpt"], optim_bits=s["optim_bits"],
                   chunked_loss=s["chunked_loss"], offload_ckpt=s["ckpt_offload"])
    tokens, basis = token_budget(recipe, run_dir)
    gpus = {}
    for gpu in PLAN_GPUS:
        capacity = GPUS[gpu][0] * GIB
        tps = tokens_per_second(gpu, params["total"], recipe.load_in_4bit)
        fits = est["total"] <= capacity
        gpus[gpu] = {"memory_gib": GPUS[gpu][0], "fits": fits, "headroom_gib": round((capacity - est["total"]) / GIB, 2),
                     "fix": None if fits else make_it_fit(cfg, recipe, s, capacity),
                     "tokens_per_s": round(tps), "hours": round(tokens / tps / 3600, 2) if tokens else None}
    return {
        "recipe": recipe.name, "model": recipe.model, "known": True, "shapes": cfg, "params": params,
        "lora": {"r": recipe.lora_r, "target_modules": recipe.lora.target_modules, "trainable": est["trainable"],
                 "share": est["trainable"] / params["total"]},
        "settings": s,
        "vram_gib": {k: round(v / GIB, 3) for k, v in est["components"].items()},
        "total_gib": round(est["total"] / GIB, 2),
        "transient": {k: round(v / GIB, 3) if isinstance(v, int) else v for k, v in est["detail"].items()},
        "gpus": gpus, "target_gpu": recipe.gpu,
        "multi_gpu": multi_gpu_plan(cfg, est, recipe, params["total"], tokens),
        "time": {"tokens": tokens, "basis": basis,
                 "model": "4N FLOPs/token at 35% MFU of dense bf16 peak (pipeline/lib/planner.py)"},
        "data_needs_max_seq_length": data_needs(recipe, run_dir),
    }


def data_needs(recipe: Recipe, run_dir: Path | None) -> int | None:
    """The max_seq_length the counted data needs and the one the count stage suggests, where it found a turn that
    fits in no window of the recipe's (None: it fits, or it was not counted)."""
    try:
        too_long = json.loads((run_dir / "count" / "report.json").read_text())["too_long"]
        need, suggest = too_long.get("needs_max_seq_length"), too_long.get("suggested_max_seq_length")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {"needs": need, "suggested": suggest} if isinstance(need, int) and need > recipe.max_seq_length else None


def show_plan(recipe: Recipe, run_dir: Path | None = None) -> dict:
    """Compute the plan and print it; returns the plan dict (the load stage calls this first)."""
    p = plan(recipe, run_dir)
    if not p["known"]:
        console.print(f"[yellow]plan:[/] {p['note']}")
        return p
    s = p["settings"]
    base = "NF4" if s["bits"] == 4 else f"{s['bits']}-bit"
    console.print(f"plan for [bold]{recipe.name}[/]: {recipe.model}, {p['params']['total'] / 1e9:.2f}B params, "
                  f"{base} base, batch {s['batch']} x {s['seq']} tokens, "
                  f"gradient checkpointing {'on' if s['grad_ckpt'] else 'off'}, {s['optim_bits']}-bit Adam")
    lora = p["lora"]
    console.print(f"trainable LoRA params: [bold]{lora['trainable']:,}[/] (r={lora['r']}, "
                  f"{len(lora['target_modules'])} modules) = {100 * lora['share']:.2f}% of {p['params']['total']:,}")
    t = Table(title="VRAM breakdown (GiB)")
    t.add_column("component")
    t.add_column("GiB", justify="right")
    for k, v in p["vram_gib"].items():
        t.add_row(k.replace("_", " "), f"{v:.2f}")
    t.add_row("[bold]total[/]", f"[bold]{p['total_gib']:.2f}[/]")
    d = p["transient"]
    t.add_row("[dim]transient: logits + loss[/]", f"[dim]{d['logits_and_loss']:.2f}[/]")
    t.add_row("[dim]transient: one layer's backward[/]", f"[dim]{d['layer_backward']:.2f}[/]")
    t.add_row("[dim]checkpoints in CPU RAM (Unsloth)[/]", f"[dim]{d['checkpoints_in_cpu_ram']:.2f}[/]")
    console.print(t)
    g = Table(title="fit and wall time")
    for col in ("GPU", "GiB", "fits", "headroom", "tokens/s", "hours", "if not"):
        g.add_column(col)
    for gpu, row in p["gpus"].items():
        g.add_row(gpu + (" *" if gpu == recipe.gpu else ""), str(row["memory_gib"]),
                  "[green]fit[/]" if row["fits"] else "[red]no fit[/]", f"{row['headroom_gib']:+.1f}",
                  f"{row['tokens_per_s']:,}", "?" if row["hours"] is None else f"{row['hours']:.2f}", row["fix"] or "")
    console.print(g)
    console.print(f"[dim]tokens: {p['time']['basis']}; speed: {p['time']['model']}; * = recipe's gpu[/]")
    if p["data_needs_max_seq_length"]:
        need = p["data_needs_max_seq_length"]
        console.print(f"[red]the counted data needs max_seq_length >= {need['needs']}[/] (a turn fits in no window of "
                      f"{recipe.max_seq_length}): `make plan ARGS=\"max_seq_length={need['suggested']}\"` "
                      "shows what that costs")
    m = Table(title="several GPUs (make train NPROC=n): memory per GPU")
    for col in ("GPUs", "DDP GiB each", "FSDP GiB each", "sharding=auto", "hours"):
        m.add_column(col)
    for label, row in p["multi_gpu"].items():
        m.add_row(label.replace("x", " x ") + " GiB" + (f" ({row['gpu']})" if row["gpu"] else ""), f"{row['ddp_gib']:.1f}", f"{row['fsdp_gib']:.1f}",
                  row["auto"] or "[red]no fit[/]", "?" if row["hours"] is None else f"{row['hours']:.2f}")
    console.print(m)
    console.print(f"[dim]DDP: a whole copy per GPU; FSDP: weights, adapter, gradients and optimizer split across them; "
                  f"hours assume each added GPU brings {SCALING:.0%} of one's speed[/]")
    return p
