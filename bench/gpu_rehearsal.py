#!/usr/bin/env python
"""The full-size rehearsal of a 7-8B recipe on one GPU (`make gpu-rehearsal`): memory and speed at the real shape.

    python bench/gpu_rehearsal.py --config llama3_1_8b/config.json --tokenizer llama3_1_instruct/ [--out F]
    python bench/gpu_rehearsal.py --cpu-smoke ...     # the same code on a 2-layer miniature on the CPU

Random weights at the base model's real shape (its config.json: Llama 3.1 8B by default), saved in
16 bits, then, each in its own process (importing Unsloth patches transformers):

  unsloth   pipeline.lib.backends.load_base(backend=unsloth): NF4 + Unsloth's kernels and checkpointing
  hf        pipeline.lib.backends.load_base(backend=hf): bitsandbytes NF4 + PEFT, TRL's trainer
  plain     the plain TRL + PEFT script: 4-bit AutoModelForCausalLM, SFTTrainer(peft_config=...), TRL's
            defaults (its collator, its gradient checkpointing)
  export    pipeline.stages.s5_export.merge_checked on the 8B: 16-bit base + the unsloth part's adapter, merge,
            save, reload, greedy check; timed

Each training part runs the recipe's own batch, sequence length, LoRA, optimizer and checkpointing
(pipeline.lib.trainer.sft_config with the stage's resolved settings), `--warmup` + `--steps` micro-batches
of full-length rows, and records tokens/s after the warmup, the peak memory PyTorch allocated and
reserved, and the plan's estimate for the same settings (pipeline.lib.planner.estimate): plan vs measured.
The figures are compared with torchtune's Llama 3.1 8B QLoRA on an RTX 4090 (2,413 tokens/s, 7.4 GiB
peak) and the 8-10 GB of the article "Fine-Tune a 7B Model for $1,500 (Not $50,000)".
Results: --out, else $OUT/gpu_rehearsal.json when OUT is set, else ./gpu_rehearsal.json, written
after every part. Without CUDA (and without --cpu-smoke) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT,):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.child import run_child  # noqa: E402  (after the path and environment are set)
from pipeline.lib.common import write_json_atomic  # noqa: E402

PARTS = ("unsloth", "hf", "plain", "export")
ANCHORS = {"torchtune_rtx4090_tokens_per_s": 2413, "torchtune_rtx4090_peak_gib": 7.4, "article_gib": (8, 10)}
GIB = 1 << 30


def fixture(*parts: str) -> str | None:
    for base in (ROOT / "shared" / "fixtures", ROOT.parent / "shared" / "fixtures"):
        if (base.joinpath(*parts)).exists():
            return str(base.joinpath(*parts))
    return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="llama31-8b-tools")
    p.add_argument("--config", default=fixture("models", "llama3_1_8b_instruct", "config.json"),
                   help="the base model's config.json (default: the fixtures' Llama 3.1 8B Instruct)")
    p.add_argument("--tokenizer", default=fixture("tokenizers", "llama3_1_instruct"), help="its tokenizer folder")
    p.add_argument("--steps", type=int, default=6, help="timed micro-batches per training part")
    p.add_argument("--warmup", type=int, default=2, help="untimed micro-batches first")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {', '.join(PARTS)}")
    p.add_argument("--workdir", default=None, help="where the 16 GB checkpoint is written (default: a temporary folder)")
    p.add_argument("--out", default=None)
    p.add_argument("--timeout-s", type=float, default=240, help="limit per part")
    p.add_argument("--budget-s", type=float, default=530, help="total; parts that would start later are skipped")
    p.add_argument("--cpu-smoke", action="store_true", help="a 2-layer miniature on the CPU, no 4-bit, no Unsloth")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--ctx", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def recipe_for(ctx: dict, backend: str, **extra):
    """The recipe as `make train` resolves it, on the rehearsal's random checkpoint, one micro-batch per step."""
    from pipeline.lib.recipe import load

    over = [f"model={ctx['model_dir']}", f"backend={backend}", f"train.max_steps={ctx['warmup'] + ctx['steps']}",
            "train.grad_accum=1", "train.save_steps=1000000", "train.logging_steps=1"]
    if ctx["smoke"]:
        over += ["load_in_4bit=false", "max_seq_length=64", "train.batch_size=2"]
    return load(ctx["recipe"], over + [f"{k}={v}" for k, v in extra.items()])


def build(ctx: dict) -> dict:
    """Random weights at the config's shape (a miniature with --cpu-smoke), saved in 16 bits (fp32 on a CPU)."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from bench.miniature import miniature_config

    cfg = json.loads(Path(ctx["config"]).read_text())
    tok = AutoTokenizer.from_pretrained(ctx["tokenizer"])
    cfg = miniature_config(cfg, cfg["architectures"][0], len(tok), full_size=not ctx["smoke"])
    config = AutoConfig.for_model(**cfg)
    device = "cpu" if ctx["smoke"] else "cuda"
    dtype = torch.float32 if ctx["smoke"] else torch.bfloat16
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    n = sum(p.numel() for p in model.parameters())
    out = Path(ctx["model_dir"])
    model.save_pretrained(out, safe_serialization=True)
    for f in Path(ctx["tokenizer"]).iterdir():
        if f.is_file():
            shutil.copy2(f, out / f.name)
    return {"n_params": n, "config": {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")},
            "build_s": round(time.perf_counter() - t0, 1)}


def plan_for(ctx: dict, recipe, backend: str) -> dict:
    """The plan's estimate for exactly the settings this part trains with."""
    from pipeline.lib.backends import training_settings
    from pipeline.lib.planner import estimate

    cfg = json.loads((Path(ctx["model_dir"]) / "config.json").read_text())
    s = training_settings(recipe, backend)
    est = estimate(cfg, recipe, s.batch, s.seq, bits=s.bits, grad_ckpt=s.grad_ckpt, optim_bits=s.optim_bits,
                   chunked_loss=s.chunked_loss, offload_ckpt=s.ckpt_offload)
    return {"settings": s.to_dict(), "total_gib": est["total"] / GIB, "torch_peak_gib": est["torch_peak"] / GIB}


def train_part(part: str, ctx: dict, workdir: Path) -> dict:
    import torch
    from bench.gpu_check import make_rows, steady_rate, step_clock

    from pipeline.lib.backends import prepare_backend, training_settings

    backend = {"unsloth": "unsloth", "hf": "hf", "plain": "hf"}[part]
    if ctx["smoke"]:
        backend = "cpu"
    prepare_backend(backend)  # Unsloth before TRL, as the train stage does
    from datasets import Dataset
    from trl import SFTTrainer

    from pipeline.lib.packing import PackCollator
    from pipeline.lib.trainer import make_trainer_class, sft_config

    recipe = recipe_for(ctx, backend)
    s = training_settings(recipe, backend)
    device = "cpu" if ctx["smoke"] else "cuda"
    t0 = time.perf_counter()
    if part == "plain":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from bench.plain_trl import plain_lora, plain_sft_config
        from pipeline.lib.backends import nf4_config

        # The plain script's own choices (TRL's default checkpointing and linear schedule), with the same NF4
        # base as the backends load (a fair comparison).
        kw = {} if ctx["smoke"] else dict(quantization_config=nf4_config(torch.bfloat16), device_map={"": 0},
                                          dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(ctx["model_dir"], **kw)
        tok = AutoTokenizer.from_pretrained(ctx["model_dir"])
        tok.pad_token = tok.pad_token or tok.eos_token
        load_s = time.perf_counter() - t0
        args = plain_sft_config(workdir / "plain", batch=s.batch, steps=recipe.train.max_steps, lr=recipe.train.lr,
                                optim=recipe.train.optim if not ctx["smoke"] else "adamw_torch", scheduler="linear",
                                bf16=not ctx["smoke"], use_cpu=ctx["smoke"], grad_ckpt=True, max_length=s.seq,
                                packing=False)
        peft = plain_lora(recipe.lora_r, recipe.lora_alpha, recipe.lora.dropout, recipe.lora.target_modules,
                          recipe.lora.use_rslora)
        settings = {"gradient_checkpointing": args.gradient_checkpointing, "optim": args.optim, "collator": "TRL default"}
        trainer_kw = dict(peft_config=peft)
        plan = plan_for(ctx, recipe, "hf")
    else:
        from pipeline.lib.backends import load_base

        model, tok = load_base(recipe, backend)
        load_s = time.perf_counter() - t0
        args = sft_config(recipe, s, workdir / part, use_cpu=ctx["smoke"], model_dtype=model.dtype)
        args.disable_tqdm = True
        settings = s.to_dict()
        trainer_kw = dict(data_collator=PackCollator(pad_id=tok.pad_token_id, mode=s.packing, dtype=model.dtype))
        plan = plan_for(ctx, recipe, backend)
    vocab = model.config.get_text_config().vocab_size
    rows = make_rows(s.batch * recipe.train.max_steps, s.seq, min(vocab, len(tok)), seed=1)
    clock = step_clock()(device)
    trainer = make_trainer_class(SFTTrainer)(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                             processing_class=tok, callbacks=[clock], **trainer_kw)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        after_load = torch.cuda.memory_allocated() / GIB
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    rec = {"backend": backend, "settings": settings, "load_s": round(load_s, 1), "losses": losses,
           "tokens_per_s": steady_rate(clock.seconds, ctx["warmup"], s.batch * s.seq), "plan": plan}
    if device == "cuda":
        rec.update(after_load_gib=after_load, peak_allocated_gib=torch.cuda.max_memory_allocated() / GIB,
                   peak_reserved_gib=torch.cuda.max_memory_reserved() / GIB)
        rec["plan_vs_measured"] = rec["peak_allocated_gib"] / plan["torch_peak_gib"]
    if part == "unsloth" or (part == "hf" and ctx["smoke"]):
        trainer.model.save_pretrained(workdir / "adapter")
    return rec


def export_part(ctx: dict, workdir: Path) -> dict:
    import torch
    from transformers import AutoTokenizer

    from pipeline.stages.s5_export import merge_checked

    adapter = workdir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise RuntimeError("no adapter: the unsloth part did not finish")
    tok = AutoTokenizer.from_pretrained(ctx["model_dir"])
    tok.pad_token = tok.pad_token or tok.eos_token
    msgs = [[{"role": "user", "content": "Where is my order A-1001?"}], [{"role": "user", "content": "Cancel it, please."}]]
    prompts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    eot = tok.convert_tokens_to_ids("<|eot_id|>") if "<|eot_id|>" in tok.get_vocab() else tok.eos_token_id
    t0 = time.perf_counter()
    check, _, _ = merge_checked(ctx["model_dir"], adapter, workdir / "merged", tok, prompts, eot,
                                torch.float32 if ctx["smoke"] else torch.bfloat16, 16, 2)
    return {"merge_and_check_s": round(time.perf_counter() - t0, 1), "check": check,
            "merged_gib": sum(f.stat().st_size for f in (workdir / "merged").glob("*.safetensors")) / GIB}


def worker(args) -> int:
    ctx = json.loads(Path(args.ctx).read_text())
    workdir = Path(ctx["workdir"])
    try:
        rec = export_part(ctx, workdir) if args.worker == "export" else train_part(args.worker, ctx, workdir)
        rec["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - recorded with its text; the other parts go on
        import traceback

        rec = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    write_json_atomic(Path(args.result), rec)
    return 0


def main(argv=None) -> int:
    if argv is None:  # `make ... ARGS="--flag ..."` passes ARGS in the environment, never through a shell line
        import shlex

        argv = sys.argv[1:] + shlex.split(os.environ.get("TOOLTUNE_ARGS", ""))
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no NVIDIA GPU: skipping the full-size rehearsal (--cpu-smoke runs its code on a miniature)")
        return 0
    if not args.config or not args.tokenizer:
        print("error: give --config (the base's config.json) and --tokenizer (its tokenizer folder)")
        return 2
    out = Path(args.out or (Path(os.environ["OUT"]) / "gpu_rehearsal.json" if os.environ.get("OUT") else "gpu_rehearsal.json"))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rehearsal-"))
    ctx = {"recipe": args.recipe, "config": args.config, "tokenizer": args.tokenizer, "steps": args.steps,
           "warmup": args.warmup, "smoke": args.cpu_smoke, "workdir": str(workdir), "model_dir": str(workdir / "model")}
    started = time.time()
    from bench.gpu_check import gpu_peak_flops

    from pipeline.lib.common import versions

    name = None if args.cpu_smoke else torch.cuda.get_device_name(0)
    result = {"recipe": args.recipe, "device": name or "cpu (smoke)", "gpu_class": gpu_peak_flops(name)[0],
              "versions": versions(), "anchors": ANCHORS, "parts": {}}
    result["model"] = build(ctx)
    write_json_atomic(workdir / "ctx.json", ctx)
    parts = [p for p in PARTS if not args.only or p in args.only.split(",")]
    if args.cpu_smoke:
        parts = [p for p in parts if p != "unsloth"]
    for part in parts:
        left = args.budget_s - (time.time() - started)
        if left < 30:
            result["parts"][part] = {"status": "skipped", "error": "time budget spent"}
            continue
        res = workdir / f"{part}.json"
        rec = run_child([sys.executable, __file__, "--worker", part, "--ctx", str(workdir / "ctx.json"), "--result",
                         str(res)], res, timeout=min(args.timeout_s, left))
        result["parts"][part] = rec
        write_json_atomic(out, result)
    base = result["parts"].get("plain", {}).get("tokens_per_s")
    for rec in result["parts"].values():
        if base and rec.get("tokens_per_s"):
            rec["speed_vs_plain"] = rec["tokens_per_s"] / base
    write_json_atomic(out, result)
    print(f"{'part':8} {'status':7} {'tok/s':>8} {'x plain':>8} {'peak GiB':>9} {'plan GiB':>9} {'meas/plan':>9}")
    def f(rec: dict, k: str, spec: str = ".1f") -> str:
        v = rec.get(k)
        return format(v, spec) if isinstance(v, (int, float)) else "-"

    for part, rec in result["parts"].items():
        plan = rec.get("plan", {}).get("torch_peak_gib")
        print(f"{part:8} {rec['status']:7} {f(rec, 'tokens_per_s', '.0f'):>8} {f(rec, 'speed_vs_plain', '.2f'):>8} "
              f"{f(rec, 'peak_allocated_gib', '.2f'):>9} {format(plan, '.2f') if plan else '-':>9} {f(rec, 'plan_vs_measured', '.2f'):>9}"
              + (f"  {rec.get('error', '')[:100]}" if rec["status"] != "ok" else ""))
    if "export" in result["parts"] and result["parts"]["export"]["status"] == "ok":
        e = result["parts"]["export"]
        print(f"export: merge + check {e['merge_and_check_s']} s, {e['merged_gib']:.1f} GiB merged; "
              f"{e['check']['identical']}/{e['check']['prompts']} identical")
    print(f"-> {out}")
    return 0 if all(r["status"] == "ok" for r in result["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
