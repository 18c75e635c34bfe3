"""Benchmarks: speed and memory of each stage, as ratios against baselines measured in the same run.

    python -m bench.speed [--quick] [--repeats N] [--sections validate,count,train,eval,serve]
    make bench ARGS="--quick"

Every figure is reported next to a baseline timed in the same process run (interleaved with it,
repeat by repeat), as min/median/max over the repeats, so a busy or slow machine shifts both sides
alike. Writes bench/results.json (atomically) and prints one table per section.

1. validate: examples/s of validate.check_line on a 50,000-line file (the bundled train lines
   repeated) vs json.loads alone (the cost of checking); the whole validate stage once.
2. count: tokens/s of the count stage's way (encode.encode_many: render, loss mask, shared-prefix
   batched tokenization, mask audit) vs the per-example `len(apply_chat_template(...,
   tokenize=True))` loop vs raw batched `tokenizer(texts)` on pre-rendered texts; all three on the
   same subset, extrapolated to 50,000 examples; a short cProfile of where the time goes.
3. train: SmolLM2-135M + LoRA (r=16, alpha=32, all 7 projections) on the same conversations, same
   batches, same steps: the plain TRL script (default collator, padded, the model's own full-logits
   loss) vs tooltune unpacked vs shared-prefix packed (vs + bf16 autocast on AMX CPUs); then the
   same on conversations whose system prompts differ (packing falls back to padded rows).
   Each configuration runs in its own subprocess so that its peak RSS is its own.
4. eval: eval turns/s of generation.greedy as the evaluate stage runs it (shared prefix, preallocated
   KV cache) vs plain batched generation (DynamicCache), and the cache's own share.
5. serve: the evaluate stage's engines on the same turns: vLLM's OpenAI server (eager, and compiled) vs
   transformers (eval.engine=hf), as a ratio, and the server's start time. Needs .venv-serve.

Nothing here runs in `make test`; tests/test_bench.py checks the pure helpers only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.child import run_child
from pipeline.lib.common import console, versions, write_json_atomic
from pipeline.lib.conversations import BUNDLED, bundled_tools, read_records
from pipeline.lib.recipe import ROOT

RECIPE = "smollm2-135m-tools"
OUT = ROOT / "bench" / "results.json"


# --- pure helpers (tested in tests/test_bench.py) -------------------------------------------------

def spread(values: list[float], digits: int = 4) -> dict:
    """min/median/max (and n) of a list of measurements."""
    if not values:
        return {"min": None, "median": None, "max": None, "n": 0}
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def ratios(candidate: list[float], baseline: list[float]) -> list[float]:
    """Pairwise candidate/baseline ratios (repeat i against repeat i: measured side by side)."""
    if len(candidate) != len(baseline):
        raise ValueError("candidate and baseline need the same number of repeats")
    return [c / b for c, b in zip(candidate, baseline) if b]


def repeat_to(items: list, n: int) -> list:
    """The first n items of items, items, items, ... (a bigger data set made by repetition)."""
    if not items:
        raise ValueError("nothing to repeat")
    return [items[i % len(items)] for i in range(n)]


def fmt_spread(s: dict, unit: str = "", digits: int = 1) -> str:
    if not s or s.get("median") is None:
        return "-"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(s['median'])}{unit} [{f.format(s['min'])}-{f.format(s['max'])}]"


def fmt_ratio(s: dict) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.2f}x [{s['min']:.2f}-{s['max']:.2f}]"


def with_random_system_prompts(records: list[dict], seed: int = 0) -> list[dict]:
    """The same conversations, each with its own system prompt (a random ticket id in front of it),
    so that no two share a token prefix beyond the first few template tokens."""
    rng = random.Random(seed)
    out = []
    for r in records:
        msgs = [dict(m) for m in r["messages"]]
        tag = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))
        if msgs and msgs[0]["role"] == "system":
            msgs[0]["content"] = f"Ticket {tag}. " + msgs[0]["content"]
        else:
            msgs.insert(0, {"role": "system", "content": f"Ticket {tag}."})
        out.append({**r, "messages": msgs})
    return out


# --- the machine ----------------------------------------------------------------------------------

def machine() -> dict:
    import torch

    from pipeline.lib.backends import cpu_has_bf16

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "amx_or_avx512_bf16": cpu_has_bf16(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform(),
            "versions": versions()}


# --- data -----------------------------------------------------------------------------------------

def load_chat():
    from pipeline.lib import recipe as recipe_mod
    from pipeline.lib.models import load_tokenizer
    from pipeline.lib.template import Chat

    recipe = recipe_mod.load(RECIPE, [])
    tok = load_tokenizer(recipe)
    return recipe, tok, Chat.for_recipe(recipe, tok)


# --- 1. validation --------------------------------------------------------------------------------

def bench_validate(cfg: dict, tmp: Path) -> dict:
    from pipeline.lib import recipe as recipe_mod
    from pipeline.stages import s1_validate as validate

    n = cfg["validate_lines"]
    tools = bundled_tools()
    lines = [ln for ln in (BUNDLED / "train.jsonl").read_bytes().splitlines() if ln.strip()]
    big = tmp / "validate_big.jsonl"
    big.write_bytes(b"\n".join(repeat_to(lines, n)) + b"\n")
    with open(big, "rb") as f:  # read back as the stage does (bytes, newline stripped)
        raws = [raw.rstrip(b"\r\n") for raw in f]
    base_rates, check_rates, bad = [], [], 0
    for _ in range(cfg["repeats"]):
        t = time.perf_counter()
        for raw in raws:
            json.loads(raw)
        base_rates.append(n / (time.perf_counter() - t))
        schemas = validate.Schemas()  # fresh each repeat: schema compilation is part of the cost
        t = time.perf_counter()
        bad = 0
        for raw in raws:
            rec, errors = validate.check_line(raw, tools, schemas)
            bad += rec is None
        check_rates.append(n / (time.perf_counter() - t))
    out = {"lines": n, "file_mb": round(big.stat().st_size / 1e6, 1), "rejected_by_check_line": bad,
           "json_loads_examples_per_s": spread(base_rates, 1), "check_line_examples_per_s": spread(check_rates, 1),
           "check_line_vs_json_loads": spread(ratios(check_rates, base_rates)),
           "note": "ratio < 1: check_line's throughput as a share of bare json.loads; 1/ratio is the cost of checking"}
    if cfg["validate_stage"]:
        from pipeline.lib import common

        os.environ["TOOLTUNE_RUNS"] = str(tmp / "runs")
        recipe = recipe_mod.load(RECIPE, [f"data.train={big}"])
        run_dir = recipe_mod.run_dir_for("bench-validate")
        run_dir.mkdir(parents=True, exist_ok=True)
        quiet = common.console.quiet
        common.console.quiet = True  # the stage's own tables are not part of the benchmark output
        t = time.perf_counter()
        try:
            validate.run(recipe, run_dir)
        finally:
            common.console.quiet = quiet
        dt = time.perf_counter() - t
        report = json.loads((run_dir / "validate" / "report.json").read_text())
        eval_lines = sum(1 for ln in (BUNDLED / "eval.jsonl").read_bytes().splitlines() if ln.strip())
        stage_rate = (n + eval_lines) / dt
        out["stage"] = {"seconds": round(dt, 2), "lines_read": n + eval_lines,
                        "examples_per_s": round(stage_rate, 1),
                        "vs_check_line_median": round(stage_rate / out["check_line_examples_per_s"]["median"], 3),
                        "report_counts": {k: report[k] for k in ("accepted", "rejected", "unused", "read") if k in report},
                        "note": "validate.run once on the same file + the bundled eval file (dedupe rejects the "
                                "repeated lines as duplicates and writes them to rejects.jsonl)"}
    return out


# --- 2. counting ----------------------------------------------------------------------------------

def bench_count(cfg: dict) -> dict:
    import cProfile
    import pstats

    from pipeline.lib.encode import encode_many

    tools = bundled_tools()
    recs = read_records(BUNDLED / "train.jsonl", tools)
    recipe, tok, chat = load_chat()
    n_total, n_sub = cfg["count_examples"], cfg["count_subset"]
    subset = repeat_to(recs, min(n_sub, n_total))
    texts = [chat.render(r["messages"], r["tools"]) for r in subset]  # pre-rendered for (c), untimed

    def way_a(part=None):
        out = []
        for _, _, _, ids, _ in encode_many(chat, part or subset):  # each mask audited inside
            out.append(ids)
        return out

    loop_subset = subset[: cfg.get("count_loop_subset", len(subset))]  # the slow loop: fewer examples, same rate

    def way_b():
        out = []
        for r in loop_subset:
            enc = tok.apply_chat_template(r["messages"], tools=r["tools"], tokenize=True)
            out.append(list(enc["input_ids"]) if hasattr(enc, "keys") else list(enc))
        return out

    def way_c():
        return tok(texts, add_special_tokens=False)["input_ids"]

    rates = {"a": [], "b": [], "c": []}
    ids = {}
    for rep in range(cfg["repeats"]):
        order = ("a", "b", "c") if rep % 2 == 0 else ("c", "b", "a")
        for k in order:
            t = time.perf_counter()
            got = {"a": way_a, "b": way_b, "c": way_c}[k]()
            dt = time.perf_counter() - t
            ids[k] = got
            rates[k].append(sum(len(x) for x in got) / dt)
    tokens = sum(len(x) for x in ids["a"])
    a_ids = [x.tolist() for x in ids["a"]]  # numpy arrays, as the count stage yields them
    identical = (a_ids[: len(ids["b"])] == [list(x) for x in ids["b"]]) and a_ids == [list(x) for x in ids["c"]]
    per_ex = tokens / len(subset)
    out = {
        "examples": n_total, "measured_on": len(subset), "loop_measured_on": len(loop_subset),
        "extrapolated": len(subset) < n_total,
        "tokens_per_example": round(per_ex, 1), "token_ids_identical_a_b_c": identical,
        "a_count_stage_tokens_per_s": spread(rates["a"], 1),
        "b_apply_chat_template_loop_tokens_per_s": spread(rates["b"], 1),
        "c_raw_batched_tokenizer_tokens_per_s": spread(rates["c"], 1),
        "a_vs_b": spread(ratios(rates["a"], rates["b"])),
        "a_vs_c": spread(ratios(rates["a"], rates["c"])),
        "c_vs_b": spread(ratios(rates["c"], rates["b"])),
        "estimated_seconds_for_all": {k: round(n_total * per_ex / statistics.median(v), 1) for k, v in rates.items()},
        "targets": {"a_vs_b_at_least": 10.0, "a_vs_c_within": 1.5},
    }
    med_ab = out["a_vs_b"]["median"]
    med_ac = out["a_vs_c"]["median"]
    out["target_met"] = {"a_vs_b": med_ab >= 10.0, "a_vs_c": med_ac >= 1 / 1.5}
    out["target_gap"] = {"a_vs_b_short_by": round(10.0 / med_ab, 2), "a_vs_c_slower_by": round(1 / med_ac, 2)}

    # Where the count stage's time goes.
    prof_n = min(cfg["profile_examples"], len(subset))
    pr = cProfile.Profile()
    pr.enable()
    way_a(subset[:prof_n])
    pr.disable()
    st = pstats.Stats(pr).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}

    def cum(func: str, file_part: str = "") -> tuple[float, int]:
        hits = [(v[3], v[1]) for k, v in st.items() if k[2] == func and file_part in k[0]]
        return (max(h[0] for h in hits), max(h[1] for h in hits)) if hits else (0.0, 0)

    total, _ = cum("way_a", "speed.py")
    render, renders = cum("render_adapted", "template.py")  # every Jinja render goes through it
    py_render, _ = cum("__call__", "template.py")  # HermesRenderer: the Jinja template's Python twin
    # The Rust tokenizer, called through transformers (`tok(texts)`) or directly (`encode_batch`).
    encode = sum(v[2] for k, v in st.items() if "encode_batch" in k[2] or "encode' of 'tokenizers" in k[2])
    encodes = sum(v[1] for k, v in st.items() if "encode_batch" in k[2] or "encode' of 'tokenizers" in k[2])
    sandbox, _ = cum("getattr", "sandbox.py")  # 0 for tooltune's own templates (rendered unsandboxed)
    audit, _ = cum("audit", "mask.py")  # Layout.audit: a chunk's masks at once
    out["profile"] = {
        "examples": prof_n, "seconds": round(total, 3),
        "jinja_renders_per_example": round(renders / max(1, prof_n), 2),
        "share_jinja_render": round(render / max(total, 1e-9), 3),
        "share_python_render": round(py_render / max(total, 1e-9), 3),
        "share_jinja_sandbox_getattr": round(sandbox / max(total, 1e-9), 3),
        "share_tokenizer_call": round(encode / max(total, 1e-9), 3),
        "tokenizer_calls_per_example": round(encodes / max(1, prof_n), 2),
        "share_mask_audit": round(audit / max(total, 1e-9), 3),
        "share_other": round(max(0.0, total - render - py_render - encode - audit) / max(total, 1e-9), 3),
    }
    return out


# --- 3. training (one subprocess per configuration) ------------------------------------------------

def vm_hwm_mb() -> float:
    """Peak resident set size of this process so far (Linux VmHWM), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_worker(spec: dict) -> dict:
    """Train `spec["steps"]` + `spec["warmup"]` steps in this process; per-step times, losses, memory."""
    import psutil
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, set_seed
    from trl import SFTTrainer

    from bench.plain_trl import plain_sft_config

    from pipeline.lib import recipe as recipe_mod
    from pipeline.lib.backends import lora_config_kwargs, n_layers_of
    from pipeline.lib.models import builtin_dir, load_tokenizer
    from pipeline.lib.packing import PackCollator
    from pipeline.lib.trainer import make_trainer_class

    # Every configuration uses the article's LoRA placement (all blocks) unless it says otherwise.
    recipe = recipe_mod.load(RECIPE, [f"lora.top_layers={spec.get('top_layers') or 'null'}"])
    seed = recipe.seed
    set_seed(seed)
    rows = [json.loads(line) for line in open(spec["data"], encoding="utf-8")]
    model = AutoModelForCausalLM.from_pretrained(builtin_dir(recipe.model), dtype=torch.float32,
                                                 attn_implementation="sdpa", use_safetensors=True)
    tok = load_tokenizer(recipe)
    torch.manual_seed(seed)  # the same LoRA initialization in every configuration
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora_config_kwargs(recipe, n_layers_of(model))))
    rss_loaded = psutil.Process().memory_info().rss / 2**20
    peak_loaded = vm_hwm_mb()

    per_batch: list[dict] = []
    losses: list[float] = []
    mode = spec["mode"]
    if mode == "baseline":
        class Plain(SFTTrainer):
            # TRL 1.15's own loss is a fused Triton LM head, absent from CPU torch: the plain script's
            # loss here is transformers.Trainer's, i.e. the model's own cross-entropy over all logits.
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

        base_cls, collator = Plain, None
    else:
        stats: dict = {}
        base_cls = make_trainer_class(SFTTrainer)
        collator = PackCollator(pad_id=tok.pad_token_id, mode=mode, max_pack_tokens=recipe.train.max_pack_tokens,
                                mask_kind="bool", dtype=model.dtype, stats=stats)

    class Recorded(base_cls):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
            losses.append(float((out[0] if return_outputs else out).detach().float()))
            return out

    def counting(inner):
        def collate(examples):
            before = dict(getattr(inner, "stats", None) or {})
            batch = inner(examples)
            real = sum(len(e["input_ids"]) for e in examples)
            computed = batch["input_ids"].numel()
            if isinstance(inner, PackCollator):
                pad = inner.stats.get("pad_tokens", 0) - before.get("pad_tokens", 0)
            else:
                pad = int((batch["attention_mask"] == 0).sum())
            per_batch.append({"conversations": len(examples), "real_tokens": real, "computed_tokens": computed,
                              "pad_tokens": pad, "rows": int(batch["input_ids"].shape[0]),
                              "width": int(batch["input_ids"].shape[1])})
            return batch
        return collate

    steps = spec["warmup"] + spec["steps"]
    # the plain script's SFTConfig for every configuration (the same optimizer, schedule and steps), with
    # the batches as each collator builds them, and the recipe's checkpointing (TRL's default is on)
    args = plain_sft_config(spec["tmp"], batch=spec["batch"], steps=steps, lr=recipe.train.lr, seed=seed, use_cpu=True,
                            bf16=spec["bf16"], grad_ckpt=recipe.train.gradient_checkpointing, weight_decay=0.0,
                            remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            ends.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            ends.append(time.perf_counter())

    trainer = Recorded(model=model, args=args, train_dataset=dataset, data_collator=collator,
                       processing_class=tok, callbacks=[Clock()])
    inner_collator = trainer.data_collator
    trainer.data_collator = counting(trainer.data_collator)
    trainer.train()
    step_s = [b - a for a, b in zip(ends, ends[1:])]
    flops = counted_step_flops(trainer, inner_collator, dataset, spec["batch"], losses)
    timed = slice(spec["warmup"], steps)
    return {"mode": mode, "bf16": spec["bf16"], "step_seconds": step_s, "timed_step_seconds": step_s[timed],
            "losses": losses, "batches": per_batch, "timed_batches": per_batch[timed],
            "peak_rss_mb": round(vm_hwm_mb(), 1), "peak_rss_after_load_mb": round(peak_loaded, 1),
            "rss_after_load_mb": round(rss_loaded, 1), "torch_threads": torch.get_num_threads(),
            "attn_implementation": getattr(model.config, "_attn_implementation", None), "step_flops": flops}


def counted_step_flops(trainer, collator, dataset, batch: int, losses: list) -> dict:
    """The floating-point operations of one training step (forward and backward, as this configuration computes
    them: packing, the trained positions' LM head, adapted blocks only), counted by torch's FlopCounterMode on the
    first batch, and the tokens that step computed: FLOPs per computed token, to set against the matmul peak."""
    from torch.utils.flop_counter import FlopCounterMode

    inputs = trainer._prepare_inputs(collator([dataset[i] for i in range(min(batch, len(dataset)))]))
    trainer.model.train()
    with FlopCounterMode(display=False) as counter:
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
    losses.pop()  # the counted step is not one of the timed ones
    trainer.model.zero_grad(set_to_none=True)
    computed = int(inputs["input_ids"].numel())
    total = counter.get_total_flops()
    del loss
    return {"flops": int(total), "computed_tokens": computed, "flops_per_computed_token": total / max(1, computed)}


def matmul_peak(shapes: list[tuple[int, int, int]], dtype: str = "float32", seconds: float = 2.0) -> dict:
    """This machine's matrix-product rate in `dtype`, measured now: GFLOP/s of torch.mm at each shape (the model's
    own linear layers among them), best of repeated runs; the peak is the best shape's. MFU is set against it, in
    the same run, so a faster or slower machine moves both."""
    import torch

    dt = getattr(torch, dtype)
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dt), torch.randn(k, n, dtype=dt)
        torch.mm(a, b)
        best, spent = 0.0, 0.0
        while spent < seconds:
            t = time.perf_counter()
            torch.mm(a, b)
            dt_s = time.perf_counter() - t
            spent += dt_s
            best = max(best, 2 * m * k * n / dt_s / 1e9)
        out[f"{m}x{k}x{n}"] = round(best, 1)
    return {"dtype": dtype, "gflops_by_shape": out, "peak_gflops": max(out.values()), "threads": torch.get_num_threads()}


def run_worker(spec: dict, tmp: Path) -> dict:
    spec_path = tmp / f"spec-{spec['name']}.json"
    out_path = tmp / f"result-{spec['name']}.json"
    spec_path.write_text(json.dumps({**spec, "tmp": str(tmp / f"trainer-{spec['name']}")}))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    res = run_child([sys.executable, "-m", "bench.speed", "--worker", str(spec_path), "--worker-out", str(out_path)],
                    out_path, env=env)
    if res.get("status") in ("crashed", "timeout"):
        hint = "; try --train-batch 2" if res.get("returncode") == -9 else ""
        raise RuntimeError(f"train worker {spec['name']} {res['error']}{hint}:\n{res['stderr_tail']}")
    res["process_seconds"] = res.pop("wall_s")
    return res


def tokenized_rows(recs: list[dict], chat) -> list[dict]:
    from pipeline.lib.encode import encode_many
    from pipeline.lib.packing import IGNORE

    return [{"input_ids": ids.tolist(), "labels": [t if m else IGNORE for t, m in zip(ids.tolist(), mask.tolist())]}
            for _, _, _, ids, mask in encode_many(chat, recs, audit=False)]


def summarize_train(res: dict, base: dict | None) -> dict:
    steps = res["timed_step_seconds"]
    batches = res["timed_batches"]
    conv_rates = [b["conversations"] / s for b, s in zip(batches, steps)]
    tok_rates = [b["real_tokens"] / s for b, s in zip(batches, steps)]
    computed = sum(b["computed_tokens"] for b in res["batches"])
    out = {
        "conversations_per_s": spread(conv_rates, 3), "real_tokens_per_s": spread(tok_rates, 1),
        "step_seconds": spread(steps, 2),
        "padding_share_of_computed": round(sum(b["pad_tokens"] for b in res["batches"]) / max(1, computed), 4),
        "computed_tokens_per_step": spread([b["computed_tokens"] for b in res["batches"]], 0),
        "real_tokens_per_step": spread([b["real_tokens"] for b in res["batches"]], 0),
        "computed_over_real": round(computed / max(1, sum(b["real_tokens"] for b in res["batches"])), 4),
        "rows_x_width": [f"{b['rows']}x{b['width']}" for b in res["batches"]],
        "peak_rss_mb": res["peak_rss_mb"], "peak_rss_after_load_mb": res["peak_rss_after_load_mb"],
        "training_rss_increase_mb": round(res["peak_rss_mb"] - res["rss_after_load_mb"], 1),
        "losses": [round(x, 6) for x in res["losses"]], "process_seconds": res.get("process_seconds"),
    }
    if base is not None:
        # Step k holds the same conversations in every configuration: per-step time ratios pair up.
        out["speedup_vs_baseline"] = spread(ratios(base["timed_step_seconds"], steps), 3)
        out["peak_rss_vs_baseline"] = round(res["peak_rss_mb"] / base["peak_rss_mb"], 3)
        out["max_abs_loss_diff_vs_baseline"] = float(max(abs(a - b) for a, b in zip(res["losses"], base["losses"])))
    return out


def bench_train(cfg: dict, tmp: Path) -> dict:
    from pipeline.lib.backends import cpu_has_bf16

    tools = bundled_tools()
    recipe, tok, chat = load_chat()
    k = cfg["train_batch"] * (cfg["train_warmup"] + cfg["train_steps"])
    recs = read_records(BUNDLED / "train.jsonl", tools)[:k]
    datasets = {"shared": recs, "distinct": with_random_system_prompts(recs)}
    top = recipe.lora.top_layers  # the default recipe's: LoRA on the top blocks only
    configs = [("baseline", "baseline", False, None), ("tooltune_unpacked", "none", False, None),
               ("tooltune_packed", "shared_prefix", False, None)]
    if cpu_has_bf16():
        configs.append(("tooltune_packed_bf16", "shared_prefix", True, None))
    if top:
        configs.append((DEFAULT_RECIPE, "shared_prefix", cpu_has_bf16() and recipe.cpu_bf16, top))
    wanted = {"shared": set(cfg["train_configs"]), "distinct": set(cfg["train_distinct_configs"])}
    out: dict = {"conversations": k, "batch": cfg["train_batch"], "warmup_steps": cfg["train_warmup"],
                 "timed_steps": cfg["train_steps"], "lr": recipe.train.lr,
                 "lora": {"r": recipe.lora_r, "alpha": recipe.lora_alpha, "dropout": recipe.lora.dropout,
                          "use_rslora": recipe.lora.use_rslora, "target_modules": list(recipe.lora.target_modules)},
                 "notes": [
                     "baseline: TRL SFTTrainer + peft LoRA, TRL's default collator (right-padded rows), no packing, "
                     "labels = assistant tokens; its compute_loss is transformers.Trainer.compute_loss (the model's "
                     "own cross-entropy over all logits) because TRL 1.15's fused LM-head loss needs Triton, which "
                     "CPU torch lacks; the tooltune configs use pipeline.lib.trainer.make_trainer_class(SFTTrainer)",
                     "every configuration: same LoRA init (torch.manual_seed before get_peft_model, the recipe's "
                     "LoRA settings incl. rsLoRA and dropout 0 so that losses are comparable), same conversations "
                     "in the same batches, constant lr, adamw_torch, fp32 weights, one subprocess each",
                     "speedup_vs_baseline: baseline step time / config step time, per timed step (step k holds the "
                     "same conversations everywhere); min/median/max over the timed steps",
                     "peak RSS: VmHWM of the worker process (imports + model + training)",
                     "tooltune_default_recipe: the default recipe's own configuration (packed, bf16 autocast where "
                     "the CPU has AMX, LoRA on the top lora.top_layers blocks only); its LoRA placement differs from "
                     "the baseline's, so its loss curve is not expected to match"]}
    shapes = [(2048, 2048, 2048), (4096, 576, 1536), (4096, 1536, 576), (4096, 576, 49152)]  # SmolLM2's layers
    out["matmul_peak"] = {"fp32": matmul_peak(shapes, "float32", cfg["peak_seconds"])}
    if cpu_has_bf16():
        out["matmul_peak"]["bf16"] = matmul_peak(shapes, "bfloat16", cfg["peak_seconds"])
    for label, recs_ in datasets.items():
        if not cfg["train_distinct_configs"] and label == "distinct":
            continue
        data_path = tmp / f"train-{label}.jsonl"
        rows = tokenized_rows(recs_, chat)
        data_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        from pipeline.lib.packing import common_prefix

        b = cfg["train_batch"]
        prefixes = [common_prefix([r["input_ids"] for r in rows[i:i + b]], [r["labels"] for r in rows[i:i + b]])
                    for i in range(0, len(rows), b)]
        section: dict = {"shared_prefix_tokens_per_batch": spread(prefixes, 0),
                         "mean_tokens_per_conversation": round(sum(len(r["input_ids"]) for r in rows) / len(rows), 1)}
        results = {}
        for name, mode, bf16, top_layers in configs:
            if name not in wanted[label]:
                continue
            console.print(f"[dim]bench train ({label} prompts): {name} ...[/]")
            spec = {"name": f"{label}-{name}", "data": str(data_path), "mode": mode, "bf16": bf16,
                    "top_layers": top_layers,
                    "batch": cfg["train_batch"], "warmup": cfg["train_warmup"], "steps": cfg["train_steps"]}
            results[name] = run_worker(spec, tmp)
        base = results["baseline"]
        for name, res in results.items():
            section[name] = summarize_train(res, None if name == "baseline" else base)
            f = res.get("step_flops")
            if f:  # achieved FLOP/s: the counted FLOPs per computed token x computed tokens per second
                rate = [f["flops_per_computed_token"] * b["computed_tokens"] / t / 1e9
                        for b, t in zip(res["timed_batches"], res["timed_step_seconds"])]
                peak = out["matmul_peak"]["bf16" if res["bf16"] else "fp32"]["peak_gflops"]
                section[name]["flops_per_computed_token"] = round(f["flops_per_computed_token"] / 1e6, 1)  # MFLOP
                section[name]["achieved_gflops"] = spread(rate, 1)
                section[name]["matmul_peak_gflops"] = peak
                section[name]["mfu_vs_matmul_peak"] = spread([r / peak for r in rate], 3)
        fp32 = [n for n in results if n != "baseline" and not results[n]["bf16"] and n in ALL_TRAIN]
        if fp32:
            section["max_abs_loss_diff_fp32_configs"] = max(section[n]["max_abs_loss_diff_vs_baseline"] for n in fp32)
        out[label] = section
    return out


# --- 4. evaluation --------------------------------------------------------------------------------

def bench_eval(cfg: dict) -> dict:
    from pipeline.lib.generation import common_prefix_len, greedy
    from pipeline.lib.inference import load_model
    from pipeline.lib.models import resolve
    from pipeline.lib.scoring import eval_items

    tools = bundled_tools()
    recipe, tok, chat = load_chat()
    items = eval_items(read_records(BUNDLED / "eval.jsonl", tools), chat.fmt, cfg["eval_prompts"])
    prompts = [chat.prompt(it["messages"], it["tools"]) for it in items]
    eot = tok.convert_tokens_to_ids(chat.eot)
    model = load_model(resolve(recipe.model, "model"), recipe, recipe.model)
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    # tooltune: prompts prefilled through their trie, its own decode loop; generate_shared_prefix: transformers'
    # generate on batches with their common prefix computed once and a preallocated cache (tooltune's way before);
    # baseline: plain batched generate (each prompt whole, transformers' DynamicCache).
    modes = {"tooltune": {}, "generate_shared_prefix": dict(trie=False),
             "baseline": dict(trie=False, share_prefix=False, static=False)}
    rates: dict = {m: [] for m in modes}
    outs = {}
    for rep in range(cfg["eval_repeats"]):
        for m in (list(modes) if rep % 2 == 0 else list(modes)[::-1]):
            t = time.perf_counter()
            outs[m] = greedy(model, tok, prompts, eot, cfg["eval_new_tokens"], recipe.eval.batch_size, **modes[m])
            rates[m].append(len(prompts) / (time.perf_counter() - t))
    same = sum(a == b == c for a, b, c in zip(*outs.values()))
    return {"prompts": len(prompts), "max_new_tokens": cfg["eval_new_tokens"], "batch_size": recipe.eval.batch_size,
            "prompt_tokens": spread([len(x) for x in ids], 0), "shared_prefix_tokens": common_prefix_len(ids),
            "generated_tokens": sum(len(x) for x in outs["tooltune"]),
            "tooltune_turns_per_s": spread(rates["tooltune"], 3), "plain_turns_per_s": spread(rates["baseline"], 3),
            "generate_shared_prefix_turns_per_s": spread(rates["generate_shared_prefix"], 3),
            "tooltune_vs_plain": spread(ratios(rates["tooltune"], rates["baseline"]), 3),
            "tooltune_vs_generate_shared_prefix": spread(ratios(rates["tooltune"], rates["generate_shared_prefix"]), 3),
            "identical_outputs": f"{same}/{len(prompts)}",
            "note": "as the evaluate stage runs it: the base model in fp32 (no autocast), greedy, batched"}


def bench_serve(cfg: dict, tmp: Path) -> dict:
    """The evaluate stage's two engines on the same turns: transformers in this process (eval.engine=hf) vs
    vLLM's OpenAI server (eval.engine=vllm), started with and without graph compilation; the server's start time."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.lib.inference import generate, load_model
    from pipeline.lib.models import resolve
    from pipeline.lib.parse import parse
    from pipeline.lib.scoring import eval_items, from_message, wire
    from pipeline.lib.servers import SERVE_PY, Server, free_port, vllm_command
    from pipeline.lib.servers import chat as post
    from pipeline.lib.template import TEMPLATES

    if not SERVE_PY.is_file():
        raise RuntimeError("no .venv-serve: run `make serve-venv` first")
    tools = bundled_tools()
    recipe, tok, chat = load_chat()
    items = eval_items(read_records(BUNDLED / "eval.jsonl", tools), chat.fmt, cfg["eval_prompts"])
    prompts = [chat.prompt(it["messages"], it["tools"]) for it in items]
    path = resolve(recipe.model, "model")
    n_new = cfg["eval_new_tokens"]

    model = load_model(path, recipe, recipe.model)
    t = time.perf_counter()
    hf_out = generate(model, tok, chat, prompts, recipe, "hf", n_new)
    hf_rate = len(items) / (time.perf_counter() - t)
    del model

    out = {"prompts": len(items), "max_new_tokens": n_new, "concurrency": recipe.eval.batch_size,
           "hf_turns_per_s": round(hf_rate, 3)}
    for mode in cfg["serve_modes"]:
        port = free_port()
        cmd = vllm_command(path, "m", parser="hermes", chat_template=TEMPLATES / "hermes.jinja",
                           max_len=recipe.max_seq_length, port=port, eager=mode == "eager")
        t = time.perf_counter()
        with Server(cmd, port, tmp / f"vllm-{mode}.log") as server:
            server.wait_ready()
            start = time.perf_counter() - t
            bodies = [{"model": "m", "messages": wire(it["messages"]), "tools": it["tools"], "temperature": 0,
                       "max_tokens": n_new, "skip_special_tokens": False} for it in items]
            post(server.url, bodies[0])  # one request first: the first one pays for lazy set-up
            t = time.perf_counter()
            with ThreadPoolExecutor(recipe.eval.batch_size) as pool:
                replies = list(pool.map(lambda b: post(server.url, b), bodies))
            rate = len(items) / (time.perf_counter() - t)
        same = sum(from_message(m, chat.fmt)[1].calls == p.calls
                   for m, p in zip(replies, (parse(x, chat.fmt) for x in hf_out)))
        out[f"vllm_{mode}"] = {"server_start_s": round(start, 1), "turns_per_s": round(rate, 3),
                               "vs_hf": round(rate / hf_rate, 3), "same_calls_as_hf": f"{same}/{len(items)}"}
    out["note"] = ("SmolLM2-135M base, the bundled eval turns, greedy; vLLM answers eval.batch_size requests at a time "
                   "and batches them itself; the compiled server's start includes compiling (cached for later starts)")
    return out


# --- report ---------------------------------------------------------------------------------------

def show(res: dict) -> None:
    # A wide table even when stdout is not a terminal (make bench | tee, CI logs).
    out = console if console.is_terminal else Console(highlight=False, width=170)
    m = res["machine"]
    t = Table(title="machine", show_header=False)
    for k in ("cpu_model", "logical_cores", "usable_cores", "amx_or_avx512_bf16", "torch", "torch_threads",
              "TOKENIZERS_PARALLELISM", "load_average_at_start", "load_average_at_end"):
        t.add_row(k, str(m.get(k)))
    out.print(t)
    s = res["sections"]
    t = Table(title=f"benchmarks ({res['mode']}, {res['repeats']} repeats): median [min-max]")
    for c in ("section", "measure", "value", "baseline", "ratio"):
        t.add_column(c, justify="left" if c in ("section", "measure") else "right")
    for name, err in res.get("errors", {}).items():
        t.add_row(name, "[red]failed[/]", err[-200:], "", "")
    if "validate" in s:
        v = s["validate"]
        t.add_row("validate", f"check_line, {v['lines']:,} lines (ex/s)", fmt_spread(v["check_line_examples_per_s"]),
                  "json.loads " + fmt_spread(v["json_loads_examples_per_s"]), fmt_ratio(v["check_line_vs_json_loads"]))
        if "stage" in v:
            st = v["stage"]
            t.add_row("", f"validate.run, {st['lines_read']:,} lines (ex/s)", f"{st['examples_per_s']:,.1f}",
                      "check_line (median)", f"{st['vs_check_line_median']:.2f}x")
    if "count" in s:
        c = s["count"]
        ex = f" on {c['measured_on']:,} of {c['examples']:,}" + (" (extrapolated)" if c["extrapolated"] else "")
        t.add_row("count", "(a) count stage tok/s" + ex, fmt_spread(c["a_count_stage_tokens_per_s"], digits=0),
                  "(b) loop " + fmt_spread(c["b_apply_chat_template_loop_tokens_per_s"], digits=0), fmt_ratio(c["a_vs_b"]))
        t.add_row("", "(a) vs (c) raw batched tokenizer", "", "(c) " + fmt_spread(c["c_raw_batched_tokenizer_tokens_per_s"], digits=0),
                  fmt_ratio(c["a_vs_c"]))
        t.add_row("", "targets: a/b >= 10x, a/c >= 0.67x", f"a/b {'met' if c['target_met']['a_vs_b'] else 'missed'}, "
                  f"a/c {'met' if c['target_met']['a_vs_c'] else 'missed'}", "",
                  f"short {c['target_gap']['a_vs_b_short_by']}x / {c['target_gap']['a_vs_c_slower_by']}x")
        p = c["profile"]
        t.add_row("", "count stage profile", f"render: jinja {p['share_jinja_render']:.0%} "
                  f"({p['jinja_renders_per_example']}/ex), python {p.get('share_python_render', 0):.0%}; Rust tokenizer "
                  f"{p['share_tokenizer_call']:.0%}, audit {p.get('share_mask_audit', 0):.0%}", "", "")
        est = c["estimated_seconds_for_all"]
        t.add_row("", f"est. seconds for {c['examples']:,} (a / b / c)", f"{est['a']} / {est['b']} / {est['c']}", "", "")
    if "train" in s:
        tr = s["train"]
        for label in ("shared", "distinct"):
            if label not in tr:
                continue
            sec = tr[label]
            t.add_row(f"train ({label} prompts)", f"shared prefix per batch: {fmt_spread(sec['shared_prefix_tokens_per_batch'], digits=0)}"
                      " tokens", "", "", "")
            for name in ALL_TRAIN + [DEFAULT_RECIPE]:
                if name not in sec:
                    continue
                r = sec[name]
                diff = r.get("max_abs_loss_diff_vs_baseline")
                t.add_row("", f"{name}: conv/s | real tok/s | pad share | peak RSS MB | loss diff",
                          f"{fmt_spread(r['conversations_per_s'], digits=3)} | {fmt_spread(r['real_tokens_per_s'], digits=0)} | "
                          f"{r['padding_share_of_computed']:.1%} | {r['peak_rss_mb']:,.0f}"
                          + ("" if diff is None else f" | {diff:.2e}"),
                          "baseline" if name == "baseline" else f"RSS {r['peak_rss_vs_baseline']:.2f}x",
                          "1.00x" if name == "baseline" else fmt_ratio(r["speedup_vs_baseline"]))
                if "mfu_vs_matmul_peak" in r:
                    t.add_row("", f"{name}: {r['flops_per_computed_token']} MFLOP per computed token, achieved GFLOP/s",
                              fmt_spread(r["achieved_gflops"], digits=1), f"matmul peak {r['matmul_peak_gflops']}",
                              "MFU " + fmt_spread(r["mfu_vs_matmul_peak"], digits=3))
    if "eval" in s:
        e = s["eval"]
        t.add_row("eval", f"greedy (trie prefill, own loop), {e['prompts']} prompts x {e['max_new_tokens']} new (turns/s)",
                  fmt_spread(e["tooltune_turns_per_s"], digits=3), "plain generate " + fmt_spread(e["plain_turns_per_s"], digits=3),
                  fmt_ratio(e["tooltune_vs_plain"]))
        t.add_row("", "against generate with the batch's common prefix once and a static cache", "",
                  fmt_spread(e["generate_shared_prefix_turns_per_s"], digits=3), fmt_ratio(e["tooltune_vs_generate_shared_prefix"]))
        t.add_row("", "identical outputs", e["identical_outputs"], "", "")
    if "serve" in s:
        v = s["serve"]
        for mode in ("eager", "compiled"):
            if f"vllm_{mode}" in v:
                r = v[f"vllm_{mode}"]
                t.add_row("serve" if mode == "eager" else "", f"eval via vLLM ({mode}), {v['prompts']} turns x {v['max_new_tokens']} "
                          f"new (turns/s); server start {r['server_start_s']} s; same calls {r['same_calls_as_hf']}",
                          f"{r['turns_per_s']:.3f}", f"hf engine {v['hf_turns_per_s']:.3f}", f"{r['vs_hf']:.2f}x")
    out.print(t)


ALL_TRAIN = ["baseline", "tooltune_unpacked", "tooltune_packed", "tooltune_packed_bf16"]
DEFAULT_RECIPE = "tooltune_default_recipe"  # packed (+ bf16 on AMX) with the recipe's lora.top_layers


def config(quick: bool, repeats: int | None) -> dict:
    """Sizes. Training dominates: SmolLM2-135M forward+backward runs at a few hundred tokens/s on 2
    cores. The full run trains the default recipe's batch of 4 for 2 timed steps per configuration
    (the first step's one-time costs fall on every configuration alike), which keeps `make bench`
    near 10 minutes; `--train-steps 4 --train-warmup 1` gives a steadier figure where there is time.
    Batch 8 does not fit the plain script in 24 GB: its unpacked rows (~900 tokens each) with
    full-vocabulary logits (49,152 x 4 bytes per token, plus their gradient) were killed for memory.
    Generation is timed once per mode (--repeats raises it)."""
    if quick:
        c = dict(repeats=2, validate_lines=2000, validate_stage=True, count_examples=2000, count_subset=60,
                 profile_examples=20, train_batch=2, train_warmup=0, train_steps=1,
                 train_configs=["baseline", "tooltune_packed"], train_distinct_configs=[],
                 eval_prompts=4, eval_new_tokens=8, eval_repeats=2, serve_modes=["eager"], peak_seconds=0.3)
    else:
        c = dict(repeats=3, validate_lines=50_000, validate_stage=True, count_examples=50_000, count_subset=8192, count_loop_subset=400,
                 profile_examples=256, train_batch=4, train_warmup=0, train_steps=2,
                 train_configs=ALL_TRAIN + [DEFAULT_RECIPE], train_distinct_configs=["baseline", "tooltune_packed"],
                 eval_prompts=16, eval_new_tokens=32, eval_repeats=1, serve_modes=["eager", "compiled"], peak_seconds=3.0)
    if repeats:
        c["repeats"] = repeats
        c["eval_repeats"] = repeats
    return c


def main(argv=None) -> None:
    if argv is None:  # `make ... ARGS="--flag ..."` passes ARGS in the environment, never through a shell line
        import shlex

        argv = sys.argv[1:] + shlex.split(os.environ.get("TOOLTUNE_ARGS", ""))
    ap = argparse.ArgumentParser(prog="python -m bench.speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (well under a minute a section): for debugging")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 3; --quick 2)")
    ap.add_argument("--sections", default="validate,count,train,eval,serve", help="comma-separated subset to run")
    ap.add_argument("--out", default=str(OUT), help="where to write the JSON results")
    ap.add_argument("--train-batch", type=int, default=None, help="conversations per training step (full: 4)")
    ap.add_argument("--train-warmup", type=int, default=None, help="untimed first steps (full: 0)")
    ap.add_argument("--train-steps", type=int, default=None, help="timed training steps (full: 2)")
    ap.add_argument("--train-distinct", default=None,
                    help="configs to run on distinct-prompt data, comma-separated (full: baseline,tooltune_packed)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if a.worker:
        res = train_worker(json.loads(Path(a.worker).read_text()))
        write_json_atomic(Path(a.worker_out), res)
        return
    cfg = config(a.quick, a.repeats)
    for key in ("train_batch", "train_warmup", "train_steps"):
        if getattr(a, key) is not None:
            cfg[key] = getattr(a, key)
    if a.train_distinct is not None:
        cfg["train_distinct_configs"] = [x for x in a.train_distinct.split(",") if x]
    sections = [x.strip() for x in a.sections.split(",") if x.strip()]
    unknown = set(sections) - {"validate", "count", "train", "eval", "serve"}
    if unknown:
        ap.error(f"unknown sections: {', '.join(sorted(unknown))}")
    started = time.time()
    res = {"mode": "quick" if a.quick else "full", "repeats": cfg["repeats"], "config": cfg, "machine": machine(),
           "sections": {}, "section_seconds": {}}
    out = Path(a.out)
    with tempfile.TemporaryDirectory(prefix="tooltune-bench-") as d:
        tmp = Path(d)
        for name in sections:
            console.print(f"[bold]bench:[/] {name} ...")
            t = time.time()
            fn = {"validate": lambda: bench_validate(cfg, tmp), "count": lambda: bench_count(cfg),
                  "train": lambda: bench_train(cfg, tmp), "eval": lambda: bench_eval(cfg),
                  "serve": lambda: bench_serve(cfg, tmp)}[name]
            try:
                res["sections"][name] = fn()
            except Exception as e:  # one broken section must not lose the others' figures
                res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[-4000:]
                console.print(f"[red]bench: {name} failed:[/] {type(e).__name__}: {str(e)[-1000:]}")
            res["section_seconds"][name] = round(time.time() - t, 1)
            res["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            res["machine"]["versions"] = versions()  # the libraries the sections imported
            res["wall_seconds"] = round(time.time() - started, 1)
            write_json_atomic(out, res)  # after every section: a partial run keeps what it measured
    show(res)
    console.print(f"[green]bench[/] -> {out} ({res['wall_seconds']} s)")


if __name__ == "__main__":
    main()
