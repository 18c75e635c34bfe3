"""Every published recipe, end to end, in miniature: the six stages through their real entry points.

Each rehearsal takes the recipe's own settings except size (a miniature of its base model: real
config, generation config, tokenizer and chat template; 2 layers, random weights; 12 conversations,
2 optimizer steps at a learning rate high enough to move a random model) and 4-bit (NF4 needs a
GPU: load_in_4bit=false). The miniature sits in a Hugging Face cache under the recipe's own hub ids
(bench/miniature.py), so the export finds the 16-bit twin of the pre-quantized id and the eval loads
the base and the merged model exactly as on a GPU machine that downloaded them.
"""

from __future__ import annotations

import json
import shutil

import pytest

from bench.miniature import BASES, build, cache_repo
from pipeline.lib import inference, models, planner
from pipeline.lib.backends import TrainSettings, gpu_backend, training_settings
from pipeline.lib.recipe import load as load_recipe
from pipeline.stages import s1_validate as validate
from pipeline.stages import s2_count as count
from pipeline.stages import s3_load as load
from pipeline.stages import s4_sft as sft
from pipeline.stages import s5_export as export
from pipeline.stages import s6_evaluate as evaluate
from chain import run_stage

MINI = ["load_in_4bit=false", "data.max_train=12", "data.eval_max=3", "train.max_steps=2", "train.save_steps=1",
        "train.logging_steps=1", "train.lr=5e-3", "eval.max_turns=4", "eval.batch_size=4", "eval.max_new_tokens=8",
        "export.check_prompts=3", "export.check_new_tokens=8", "eval.forgetting=2", "eval.bfcl_max_new_tokens=8"]
RECIPES = ["smollm2-135m-tools", *BASES]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test alone (what `huggingface-cli download` fills)."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    (home / "hub").mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def rehearse(name: str, args: list[str]) -> None:
    for module in (validate, count, load, sft, export, evaluate):
        run_stage(module, name, "rehearsal", args)


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPES)
def test_recipe_rehearsal(name, runs_dir, hub_cache, tmp_path, request):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    recipe = load_recipe(name)
    args = list(MINI)
    if name in BASES:
        fixtures = request.getfixturevalue("fixtures_dir")
        mini = build(name, fixtures, tmp_path / "mini")
        for repo_id in {recipe.model, export.base_16bit(recipe)}:
            cache_repo(hub_cache, repo_id, mini)
        src_gen = json.loads((mini / "generation_config.json").read_text())
    else:  # the embedded default has no hub id: its miniature is given as a folder
        mini = request.getfixturevalue("tiny_model_dir")
        args.append(f"model={mini}")
        src_gen = json.loads((mini / "generation_config.json").read_text())
    rehearse(name, args)
    run = runs_dir / "rehearsal"
    resolved = load_recipe(name, args)

    # The merged export loads as a user's server loads it, and its generation config is valid.
    merged = run / "export"
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert type(model).__name__ == AutoConfig.from_pretrained(mini).architectures[0]
    gen = GenerationConfig.from_pretrained(merged)
    gen.validate(strict=True)
    tok = AutoTokenizer.from_pretrained(merged)
    info = json.loads((merged / "tooltune.json").read_text())
    from pipeline.lib.template import Chat

    eot = tok.convert_tokens_to_ids(Chat(tok, (merged / "chat_template.jinja").read_text(), info["tool_format"]).eot)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    assert eos[0] == eot, "generation stops first at the end of turn the model was trained to write"
    # The base's sampling defaults are kept, and the model card says exactly what the file says.
    for key in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if key in src_gen:
            assert getattr(gen, key) == src_gen[key]
    card = (merged / "README.md").read_text()
    assert export.decoding_note(gen) in card and info["decoding"] == export.decoding_note(gen)
    if src_gen.get("do_sample"):
        assert f"temperature={src_gen['temperature']}" in card
    assert info["base_16bit"] == export.base_16bit(resolved)

    side = json.loads((merged / "stage.json").read_text())
    assert not side["figures"]["merge_check"]["mismatches"]

    # Training ran with the settings the plan describes (one function decides both).
    figures = json.loads((run / "sft" / "figures.json").read_text())
    assert figures["settings"] == training_settings(resolved, "cpu").to_dict()
    assert figures["settings"]["grad_ckpt"] == recipe.train.gradient_checkpointing

    # The eval scored the merged export and the base's 16-bit checkpoint, neither quantized.
    report = json.loads((run / "evaluate" / "report.json").read_text())
    assert report["models"]["tuned"]["model"].endswith("export") and not report["models"]["tuned"]["quantized"]
    assert not report["models"]["base"]["quantized"]
    if name in BASES:
        assert report["models"]["base"]["model"] == export.base_16bit(recipe)
    assert report["tuned"]["turns"] == 4


# --- the pieces the rehearsals depend on, one by one --------------------------------------------

UNSLOTH_IDS = [
    ("unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit", "unsloth/Meta-Llama-3.1-8B-Instruct"),
    ("unsloth/Meta-Llama-3.1-70B-Instruct-bnb-4bit", "unsloth/Meta-Llama-3.1-70B-Instruct"),
    ("unsloth/Qwen2.5-7B-Instruct-unsloth-bnb-4bit", "unsloth/Qwen2.5-7B-Instruct"),
    ("unsloth/Qwen2.5-7B-Instruct-bnb-4bit", "unsloth/Qwen2.5-7B-Instruct"),
    ("unsloth/mistral-7b-instruct-v0.3-bnb-4bit", "unsloth/mistral-7b-instruct-v0.3"),
    ("unsloth/Llama-3.2-3B-Instruct-unsloth-bnb-4bit", "unsloth/Llama-3.2-3B-Instruct"),
    ("unsloth/Phi-3.5-mini-instruct-bnb-4bit", "unsloth/Phi-3.5-mini-instruct"),
    ("unsloth/llama-2-13b-bnb-4bit", "unsloth/llama-2-13b"),
    ("meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
]


@pytest.mark.parametrize("quantized,sixteen", UNSLOTH_IDS)
def test_unsloth_ids_map_to_their_16bit_twin(quantized, sixteen):
    assert models.sixteen_bit_id(quantized) == sixteen
    assert export.base_16bit(load_recipe("llama31-8b-tools", [f"model={quantized}"])) == sixteen
    assert export.base_16bit(load_recipe("llama31-8b-tools", [f"model={quantized}", "export.base=x/y"])) == "x/y"


def test_every_recipe_merges_into_a_16bit_checkpoint():
    from bench.miniature import BASES

    for name in BASES:
        r = load_recipe(name)
        assert not export.base_16bit(r).endswith("bnb-4bit"), name


def test_the_eval_never_loads_a_model_quantized(fixtures_dir, tmp_path):
    """The tuned model is scored as served: the merged 16-bit export, not re-quantized to NF4 (as a
    4-bit recipe's own loading would do), on a GPU as on a CPU."""
    import torch

    from pipeline.lib.common import StageError

    recipe = load_recipe("llama31-8b-tools")
    assert recipe.load_in_4bit
    for on_gpu in (True, False):
        kw = inference.load_kwargs(recipe, on_gpu)
        assert "quantization_config" not in kw and "load_in_4bit" not in kw
        assert kw["dtype"] == (torch.bfloat16 if on_gpu else torch.float32)
    # A checkpoint that is itself quantized (the real config of Unsloth's 4-bit Llama 3.1 8B) is refused
    # before any weight is read.
    q = tmp_path / "q"
    q.mkdir()
    shutil.copy2(fixtures_dir / "models" / "llama3_1_8b_instruct" / "unsloth_bnb_4bit" / "config.json", q / "config.json")
    with pytest.raises(StageError, match="quantized checkpoint"):
        evaluate.load_model(str(q), recipe, "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit")


GPU_RECIPES = [n for n in BASES]


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_plan_and_training_use_one_set_of_settings(name, tmp_path):
    """`make plan` and the train stage take checkpointing, packing, batch and the optimizer from one
    resolved recipe; the Unsloth and TRL sides both turn checkpointing on when the plan counts on it."""
    from pipeline.lib.backends import unsloth_peft_kwargs

    recipe = load_recipe(name)
    p = planner.plan(recipe)
    settings = training_settings(recipe, gpu_backend(recipe))
    assert p["settings"] == settings.to_dict()
    assert settings.grad_ckpt, f"{name}: the GPU recipes fit their card only with gradient checkpointing"
    assert unsloth_peft_kwargs(recipe, settings, 32)["use_gradient_checkpointing"] == "unsloth"
    cfg = sft.sft_config(recipe, settings, tmp_path, use_cpu=False)
    assert cfg.gradient_checkpointing is False  # Unsloth checkpoints itself; the Trainer must not do it twice
    hf = training_settings(recipe, "hf")
    assert sft.sft_config(recipe, hf, tmp_path, use_cpu=False).gradient_checkpointing is True
    assert cfg.per_device_train_batch_size == settings.batch and cfg.optim == recipe.train.optim
    if name in ("llama31-8b-tools", "qwen25-7b-tools", "mistral-7b-tools", "phi35-mini-tools", "llama2-13b-tools"):
        assert p["gpus"]["rtx4090"]["fits"], f"{name}: {p['total_gib']} GiB does not fit an RTX 4090"
    off = planner.plan(load_recipe(name, ["train.gradient_checkpointing=false"]))
    assert off["settings"]["grad_ckpt"] is False and off["total_gib"] > p["total_gib"]


def test_training_settings_on_cpu_and_unsloth():
    r = load_recipe("llama31-8b-tools")
    assert training_settings(r, "unsloth").packing == "none"  # no block masks in Unsloth's kernels
    assert training_settings(r, "hf").packing == "shared_prefix"
    cpu = training_settings(load_recipe("llama31-8b-tools", ["load_in_4bit=false"]), "cpu")
    assert isinstance(cpu, TrainSettings) and cpu.optim_bits == 32 and cpu.bits == 32 and not cpu.ckpt_offload


def test_unsloth_is_imported_before_trl_transformers_and_peft(tmp_path, runs_dir):
    """Unsloth patches only what is imported after it. A stand-in `unsloth` package records which
    libraries were already imported when the train stage imported it (the real one needs a GPU)."""
    import subprocess
    import sys

    from pipeline.lib.recipe import ROOT

    stub = tmp_path / "stub" / "unsloth"
    stub.mkdir(parents=True)
    record = tmp_path / "imported.json"
    (stub / "__init__.py").write_text(
        "import json, sys\n"
        f"json.dump(sorted(m for m in ('transformers', 'trl', 'peft', 'datasets') if m in sys.modules), open({str(record)!r}, 'w'))\n"
        "raise SystemExit(3)\n")
    run = runs_dir / "u"
    (run / "count").mkdir(parents=True)
    (run / "count" / "train.tokens.jsonl").write_text('{"id": "a", "input_ids": [1, 2], "mask": [0, 1]}\n')
    (run / "count" / "stage.json").write_text("{}")
    code = ("from pipeline.stages import s4_sft as sft; from pipeline.lib.recipe import load; from pathlib import Path; "
            f"sft.run(load('smollm2-135m-tools', ['backend=unsloth']), Path({str(run)!r}))")
    env = {**__import__("os").environ, "PYTHONPATH": f"{stub.parent}:{ROOT}"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert json.loads(record.read_text()) == []


@pytest.mark.slow
def test_the_full_size_gpu_rehearsal_runs_its_code_on_a_cpu_miniature(fixtures_dir, tmp_path):
    """bench/gpu_rehearsal.py, the prepared full-size run, with --cpu-smoke: every part but Unsloth's
    on a 2-layer Llama 3.1 miniature, so a GPU's minutes are not spent finding its bugs."""
    import subprocess
    import sys

    from pipeline.lib.recipe import ROOT

    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_rehearsal.py"), "--cpu-smoke", "--steps", "2",
                           "--warmup", "1", "--out", str(out), "--workdir", str(tmp_path / "w"),
                           "--config", str(fixtures_dir / "models" / "llama3_1_8b_instruct" / "config.json"),
                           "--tokenizer", str(fixtures_dir / "tokenizers" / "llama3_1_instruct")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["parts"]) == {"hf", "plain", "export"}
    for part in ("hf", "plain"):
        rec = r["parts"][part]
        assert rec["status"] == "ok" and rec["tokens_per_s"] > 0 and rec["plan"]["torch_peak_gib"] > 0
        assert len(rec["losses"]) == 3
    assert r["parts"]["hf"]["settings"]["grad_ckpt"] is True  # the recipe's own checkpointing
    assert r["parts"]["plain"]["speed_vs_plain"] == 1.0
    assert not r["parts"]["export"]["check"]["mismatches"]
