"""bench/gpu_check.py: skips cleanly without a GPU, its helpers, a CPU smoke run, and (on a GPU) the real check."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def params_total(cfg: dict) -> int:
    """The plan's parameter count (the GPU check reports it beside the model's own count)."""
    from pipeline.lib.planner import params_from_config

    return params_from_config(cfg)["total"]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gc = _load()


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _run(*args, timeout=900):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(_cuda(), reason="this machine has a GPU: the check would run for real")
def test_skips_without_gpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    p = _run("--out", str(out), timeout=120)
    assert p.returncode == 0, p.stderr
    assert gc.SKIP_MESSAGE in p.stdout
    data = json.loads(out.read_text())
    assert data["status"] == "skipped" and data["reason"] == gc.SKIP_MESSAGE


def test_model_config_and_param_count():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for vocab, smoke in ((49152, False), (32000, False), (1000, True)):
        cfg = gc.model_config(vocab, smoke, eos_token_id=2, pad_token_id=None)
        assert cfg["vocab_size"] == vocab and cfg["eos_token_id"] == 2 and "pad_token_id" not in cfg
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**cfg))
        assert params_total(cfg) == sum(p.numel() for p in model.parameters())
    full = gc.model_config(49152)
    assert (full["hidden_size"], full["num_hidden_layers"], full["num_attention_heads"], full["num_key_value_heads"],
            full["intermediate_size"]) == (1024, 8, 16, 4, 2816)
    assert 130e6 < params_total(full) < 150e6
    assert params_total({**full, "tie_word_embeddings": False}) == params_total(full) + 49152 * 1024


def test_gpu_peak_flops_and_mfu():
    assert gc.gpu_peak_flops("NVIDIA H100 80GB HBM3") == ("h100", 989e12)
    assert gc.gpu_peak_flops("NVIDIA H200") == ("h200", 989e12)
    assert gc.gpu_peak_flops("NVIDIA H100 PCIe")[0] == "h100-pcie"
    assert gc.gpu_peak_flops("NVIDIA A100-SXM4-80GB") == ("a100-80gb", 312e12)
    assert gc.gpu_peak_flops("NVIDIA A100-SXM4-40GB") == ("a100-40gb", 312e12)
    assert gc.gpu_peak_flops("NVIDIA GeForce RTX 4090") == ("rtx4090", pytest.approx(165.2e12))
    assert gc.gpu_peak_flops("Tesla T4") == (None, None)
    assert gc.gpu_peak_flops(None) == (None, None)
    assert gc.mfu(100_000, 140e6, 989e12) == pytest.approx(100_000 * 4 * 140e6 / 989e12)
    assert gc.mfu(None, 140e6, 989e12) is None and gc.mfu(1000, 140e6, None) is None


def test_steady_rate_skips_warmup():
    assert gc.steady_rate([10.0, 1.0, 1.0, 2.0], 1, 4096) == pytest.approx(4096 * 3 / 4)
    assert gc.steady_rate([1.0], 1, 4096) is None
    assert gc.steady_rate([0.5, 0.5], 0, 100) == pytest.approx(200)


def test_make_rows_masks_the_first_half():
    rows = gc.make_rows(3, 10, 50, seed=0)
    assert len(rows) == 3
    for r in rows:
        assert len(r["input_ids"]) == 10 and all(0 <= t < 50 for t in r["input_ids"])
        assert r["labels"][:5] == [gc.IGNORE] * 5 and r["labels"][5:] == r["input_ids"][5:]
    assert rows[0]["input_ids"][:5] != rows[1]["input_ids"][:5]
    shared = gc.make_rows(3, 10, 50, seed=0, shared_prefix=True)
    assert shared[0]["input_ids"][:5] == shared[1]["input_ids"][:5] == shared[2]["input_ids"][:5]
    assert gc.make_rows(2, 10, 50, seed=7) == gc.make_rows(2, 10, 50, seed=7)


def test_out_path_and_clean():
    assert gc.out_path("x.json", {"OUT": "/o"}) == (Path("x.json"), True)
    assert gc.out_path(None, {"OUT": "/o"}) == (Path("/o/gpu_check.json"), True)
    assert gc.out_path(None, {}) == (Path("gpu_check.json"), False)
    assert gc.clean({"a": [1.0, math.nan, {"b": math.inf}], 1: "s"}) == {"a": [1.0, None, {"b": None}], "1": "s"}


def test_summarize():
    result = {"configs": {"a": {"status": "ok", "first_loss": 2.0}, "b": {"status": "not installed"},
                          "hf_bf16_lora": {"status": "ok", "first_loss": 10.0},
                          "baseline_trl_plain": {"status": "ok", "first_loss": 10.25}},
              "e2e": {"e2e_hf_4bit": {"status": "ok", "passed": True}}}
    s = gc.summarize(result)
    assert s["passed"] and s["counts"] == {"ok": 4, "not installed": 1}
    assert s["first_loss_repo_vs_baseline"] == pytest.approx(0.25)
    result["configs"]["c"] = {"status": "error", "error": "Traceback\nRuntimeError: boom"}
    result["e2e"]["e2e_unsloth_4bit"] = {"status": "ok", "passed": False, "why_failed": "mismatch"}
    s = gc.summarize(result)
    assert not s["passed"] and len(s["problems"]) == 2 and "boom" in s["problems"][0] and "mismatch" in s["problems"][1]


def test_minimal_tokenizer_has_the_requested_vocab():
    tok = gc.minimal_tokenizer(500)
    assert len(tok) == 500 and tok.pad_token_id is not None and tok.eos_token_id is not None
    ids = tok("List three colors:", add_special_tokens=False)["input_ids"]
    assert ids and tok.unk_token_id not in ids and max(ids) < 500


def test_missing_packages_are_reported_not_raised(monkeypatch):
    monkeypatch.setitem(gc.REQUIRES, "hf_4bit_lora", ["transformers", "surely_not_a_module_xyz"])
    rec = gc.run_one("hf_4bit_lora", {"device": "cpu"})
    assert rec["status"] == "not installed" and rec["missing"] == ["surely_not_a_module_xyz"]
    monkeypatch.setitem(gc.REQUIRES, "hf_4bit_lora", ["transformers"])
    assert gc.run_one("hf_4bit_lora", {"device": "cpu"})["status"] == "skipped"  # 4-bit needs CUDA


@pytest.mark.slow
def test_cpu_smoke_run(tmp_path):
    """The whole script on a tiny model on the CPU: the repo path, the TRL baseline and the merge check train and pass."""
    out = tmp_path / "smoke.json"
    p = _run("--cpu-smoke", "--out", str(out), timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["status"] == "done" and data["mode"] == "cpu-smoke" and data["summary"]["passed"]
    for name in ("hf_bf16_lora", "baseline_trl_plain"):
        r = data["configs"][name]
        assert r["status"] == "ok", r
        assert r["tokens_per_s"] > 0 and r["losses_finite"] and len(r["losses"]) == 3
    # Same seed, data and LoRA init: the repo's collator and TRL's default collator start at the same loss.
    assert data["summary"]["first_loss_repo_vs_baseline"] < 1e-3
    e = data["e2e"]["e2e_cpu_fp32"]
    assert e["status"] == "ok" and e["passed"], e
    assert e["adapter_effect_max_abs_logit"] > e["merged_vs_adapter_max_abs_logit"]
    for name in ("hf_4bit_lora", "unsloth_4bit_lora", "e2e_hf_4bit", "e2e_unsloth_4bit"):
        section = "e2e" if name.startswith("e2e_") else "configs"
        assert data[section][name]["status"] in ("skipped", "not installed")


def test_the_launched_configuration_runs_under_accelerate_launch(tmp_path):
    """hf_bf16_lora_launched: the repo's hf path in a process that `accelerate launch --num_processes 1` started
    (on a GPU its tokens/s against hf_bf16_lora's is the launcher's overhead)."""
    out = tmp_path / "launched.json"
    p = _run("--cpu-smoke", "--isolate", "yes", "--only", f"hf_bf16_lora,{gc.LAUNCHED}", "--out", str(out), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    data = json.loads(out.read_text())
    plain, launched = data["configs"]["hf_bf16_lora"], data["configs"][gc.LAUNCHED]
    assert launched["status"] == "ok" and launched["tokens_per_s"] > 0, launched
    assert launched["losses"] == pytest.approx(plain["losses"], rel=1e-5)  # the same training, only started differently
    assert data["summary"]["launched_vs_plain_tokens_per_s"] > 0


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_check_for_real(tmp_path):
    out = tmp_path / "gpu_check.json"
    p = _run("--out", str(out), timeout=660)
    print(p.stdout[-6000:])
    data = json.loads(out.read_text())
    assert data["status"] == "done" and data["mode"] == "gpu"
    for key in ("gpu", "versions", "model", "data", "lora", "configs", "e2e", "summary", "wall_s"):
        assert key in data, key
    assert data["gpu"]["name"] and data["model"]["n_params"] > 100e6
    assert set(data["configs"]) == set(gc.CONFIGS) and set(data["e2e"]) == set(gc.E2E)
    for name, r in {**data["configs"], **data["e2e"]}.items():
        assert r["status"] in ("ok", "error", "not installed", "skipped", "timeout", "crashed"), name
    r = data["configs"]["hf_bf16_lora"]
    assert r["status"] == "ok", r.get("error")
    assert r["tokens_per_s"] > 0 and r["peak_vram_gb"] > 0 and r["losses_finite"]
    if data["gpu"]["peak_bf16_flops"]:
        assert 0 < r["mfu"] < 1
    assert data["wall_s"] < 600
    assert (p.returncode == 0) == data["summary"]["passed"]
    assert data["summary"]["passed"], data["summary"]["problems"]
