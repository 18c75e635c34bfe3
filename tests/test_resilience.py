"""Faults a user will meet: kill -9 mid-training, an export that dies half-way, bad recipes and names,
secrets in the environment, conversations longer than max_seq_length.

Everything runs on the tiny random Llama of conftest.py, through the real stage entry points (and, for
the kill, the real `python -m pipeline.stages.s4_sft` in a subprocess).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.lib import common
from pipeline.lib import recipe as recipe_mod
from pipeline.lib.recipe import ROOT, RecipeError
from pipeline.stages import s1_validate as validate
from pipeline.stages import s2_count as count
from pipeline.stages import s3_load as load
from pipeline.stages import s4_sft as sft
from pipeline.stages import s5_export as export
from pipeline.stages import s6_evaluate as evaluate
from chain import run_stage

RECIPE = "smollm2-135m-tools"
SECRETS = {"HF_TOKEN": "hf_FAKEtoken1234567890", "WANDB_API_KEY": "fake-wandb-key-0987"}
STEPS = 6


def tiny_args(model_dir) -> list[str]:
    """12 conversations, batch 2, 6 steps (one epoch), a checkpoint every 2 steps; tiny eval/export."""
    return [f"model={model_dir}", "cpu_bf16=false", "data.max_train=12", "data.eval_max=2",
            f"train.max_steps={STEPS}", "train.save_steps=2", "train.batch_size=2", "train.logging_steps=1",
            "eval.max_turns=2", "eval.batch_size=2", "eval.max_new_tokens=6", "export.check_new_tokens=6",
            "export.check_prompts=2", "export.dtype=float16", "eval.forgetting=2", "eval.bfcl_max_new_tokens=8"]


def stage(module, run: str, args: list[str]) -> None:
    run_stage(module, RECIPE, run, args)


def read_log(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def assert_no_secrets(folder: Path) -> int:
    """Every file under `folder`, text or binary, must be free of the secret values. Returns files scanned."""
    needles = [v.encode() for v in SECRETS.values()]
    # also as UTF-16 (some binary formats store strings that way); JSON escaping leaves these ASCII values as is
    needles += [v.encode("utf-16-le") for v in SECRETS.values()]
    n = 0
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            n += 1
            for s in needles:
                assert s not in data, f"secret leaked into {p.relative_to(folder)}"
    return n


# --- the uninterrupted reference run, with secrets in the environment ---------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and on a shared 2-core machine two threads fighting
    another job's threads made a 6-step run 12x slower (22 s vs 1.8 s). Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def chain(one_thread, tiny_model_dir, tmp_path_factory) -> Path:
    """The whole chain (validate .. evaluate) on the tiny model, uninterrupted, with HF_TOKEN/WANDB_API_KEY set."""
    runs = tmp_path_factory.mktemp("chain") / "runs"
    args = tiny_args(tiny_model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOOLTUNE_RUNS", str(runs))
        for k, v in SECRETS.items():
            mp.setenv(k, v)
        took = {}
        for module in (validate, count, load, sft, export, evaluate):
            t0 = time.time()
            stage(module, "full", args)
            took[module.STAGE] = round(time.time() - t0, 1)
    print(f"\nchain stage seconds: {took}")
    return runs / "full"


# --- 1. kill -9 during training, then resume -----------------------------------------------------------

def test_kill_9_mid_training_resumes_to_the_same_adapter(chain, tiny_model_dir, runs_dir, monkeypatch):
    from safetensors.torch import load_file

    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    args = tiny_args(tiny_model_dir)
    run = runs_dir / "R"
    run.mkdir(parents=True)
    for d in ("validate", "count"):  # the same validate + count outputs as the chain's (saves their run time)
        shutil.copytree(chain / d, run / d)
    env = {**os.environ, "TOOLTUNE_RUNS": str(runs_dir), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pipeline.stages.s4_sft", "--recipe", RECIPE, "--run", "R", *args]
    ckpts = run / "sft" / "checkpoints"

    first_out = run.parent / "first-train.out"
    with open(first_out, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        try:
            # Kill the moment checkpoint-4 appears: usually while the Trainer is still writing it.
            while not (ckpts / "checkpoint-4").exists():
                assert proc.poll() is None, "train ended before it could be killed:\n" + first_out.read_text()[-3000:]
                assert time.time() < deadline, "no checkpoint-4 within 240 s"
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = sorted(p.name for p in (ckpts / "checkpoint-4").iterdir()) if (ckpts / "checkpoint-4").exists() else None
    assert not (run / "sft" / "adapter").exists(), "a killed run must leave no final adapter"
    assert not (run / "sft" / "stage.json").exists(), "a killed run must leave no stage.json"
    lines_before = len(read_log(run / "sft" / "log.jsonl"))

    # The same command again, to completion (in-process: same entry point, saves a torch import).
    stage(sft, "R", args)
    figures = json.loads((run / "sft" / "figures.json").read_text())
    assert figures["resumed"] is True
    assert figures["steps"] == STEPS
    side = json.loads((run / "sft" / "stage.json").read_text())
    assert side["figures"]["steps"] == STEPS
    assert (run / "sft" / "adapter" / "adapter_model.safetensors").is_file()
    after = read_log(run / "sft" / "log.jsonl")[lines_before:]
    assert after and after[0]["step"] > 2, f"did not resume from a checkpoint: {after[:1]}"
    assert after[-1]["step"] == STEPS

    # Same settings, uninterrupted (the chain fixture): the adapters must agree.
    a = load_file(run / "sft" / "adapter" / "adapter_model.safetensors")
    b = load_file(chain / "sft" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    max_abs = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    scale = max(float(b[k].float().abs().max()) for k in b)
    print(f"\nkill/resume: partial checkpoint-4 at kill: {partial}; resumed at step "
          f"{after[0]['step']}; adapter max|resumed - uninterrupted| = {max_abs:.3g} (max |w| = {scale:.3g})")
    # fp32 on CPU, same data order and restored RNG (dropout): only summation order may differ
    # (subprocess vs in-process, thread scheduling), which moves fp32 results by ~1e-7 relative.
    # 1e-4 of the largest weight is three orders above that and far below what a step of
    # lr 2e-4 (or a shuffled batch, or another dropout mask) changes.
    assert max_abs <= 1e-4 * scale
    assert_no_secrets(run)


def test_a_checkpoint_cut_off_mid_write_is_skipped(chain, tiny_model_dir, runs_dir, monkeypatch, capsys):
    """Deterministic version of the race above: the newest checkpoint folder exists but is incomplete."""
    run = runs_dir / "P"
    run.mkdir(parents=True)
    for d in ("validate", "count"):
        shutil.copytree(chain / d, run / d)
    args = tiny_args(tiny_model_dir)
    ckpts = run / "sft" / "checkpoints"
    shutil.copytree(chain / "sft" / "checkpoints", ckpts)
    # the chain kept checkpoint-4 and checkpoint-6; make 6 look cut off (no trainer_state, no optimizer)
    names = sorted(p.name for p in ckpts.glob("checkpoint-*"))
    assert names == ["checkpoint-4", "checkpoint-6"], names
    (ckpts / "checkpoint-6" / "trainer_state.json").unlink()
    (ckpts / "checkpoint-6" / "optimizer.pt").unlink()
    # The stamp must carry this run's training fingerprint (it covers the run folder's path), as if this
    # run had written the checkpoints: record it when train computes it.
    real_fp = sft.fingerprint

    def stamping_fp(*a, **kw):
        fp = real_fp(*a, **kw)
        (ckpts / "fingerprint.txt").write_text(fp)
        return fp

    monkeypatch.setattr(sft, "fingerprint", stamping_fp)
    capsys.readouterr()
    stage(sft, "P", args)
    out = capsys.readouterr().out
    assert "another configuration" not in out
    assert "checkpoint-6 was cut off" in out
    figures = json.loads((run / "sft" / "figures.json").read_text())
    assert figures["resumed"] and figures["steps"] == STEPS
    assert read_log(run / "sft" / "log.jsonl")[0]["step"] == 5


# --- 2. export dies half-way ---------------------------------------------------------------------------

def test_export_interrupted_leaves_nothing_trusted(chain, tiny_model_dir, runs_dir, monkeypatch, capsys):
    run = runs_dir / "X"
    shutil.copytree(chain, run)
    args = tiny_args(tiny_model_dir)
    real_check = export.forced_greedy  # the reloaded merged model's check against the adapter's replies
    merged = run / "export"

    def failing(kind):
        def fake(model, ids, references):
            out = real_check(model, ids, references)
            # inside atomic_dir: merged weights saved and reloaded, the merge check running
            if kind == "ctrl-c":
                raise KeyboardInterrupt
            return [[t + 1 for t in seq] or [1] for seq in out]  # the merge check finds a mismatch
        return fake

    # (a) no merged/ yet; Ctrl-C in the middle (also stands for any exception: atomic_dir cleans up on
    # BaseException) while a kill -9 of an earlier try left .export.tmp behind
    shutil.rmtree(merged)  # the merged model and the adapter beside it
    (run / ".export.tmp").mkdir()
    (run / ".export.tmp" / "model.safetensors").write_bytes(b"half a file")
    monkeypatch.setattr(export, "forced_greedy", failing("ctrl-c"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        stage(export, "X", args)
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted; run the same command again" in err and "Traceback" not in err
    assert not merged.exists(), "a half-written merged/ was left behind"
    assert not (run / ".export.tmp").exists() and not (run / ".export.old").exists()

    # (b) merged/ exists but its stage.json does not match (and its weights are junk): the export
    # reruns; when it fails on the way (merge-check mismatch), the old folder stays untrusted
    shutil.copytree(chain / "export", merged)
    side = json.loads((merged / "stage.json").read_text())
    side["fingerprint"] = "0" * 64
    (merged / "stage.json").write_text(json.dumps(side))
    (merged / "model.safetensors").write_bytes(b"not a model")
    monkeypatch.setattr(export, "forced_greedy", failing("mismatch"))
    with pytest.raises(SystemExit) as exc:
        stage(export, "X", args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not generate what the adapter model does" in err and "Traceback" not in err
    assert not (merged / "stage.json").exists(), "the failed export must not vouch for export/: its stale sidecar is gone"
    assert not (run / ".export.tmp").exists()

    # (c) the next run rebuilds merged/ completely
    monkeypatch.setattr(export, "forced_greedy", real_check)
    stage(export, "X", args)
    assert "nothing to do" not in capsys.readouterr().out
    for f in ("stage.json", "model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
              "README.md", "tooltune.json", "generation_config.json"):
        assert (merged / f).is_file(), f
    fp = json.loads((merged / "stage.json").read_text())["fingerprint"]
    assert fp != "0" * 64 and common.up_to_date(merged, fp)
    assert not (run / ".export.tmp").exists() and not (run / ".export.old").exists()
    assert (run / "export" / "adapter" / "adapter_model.safetensors").is_file()
    from safetensors.torch import load_file

    assert load_file(merged / "model.safetensors"), "model.safetensors was rebuilt"
    # and a run with nothing changed trusts it
    stage(export, "X", args)
    assert "nothing to do" in capsys.readouterr().out


def test_merge_check_in_16_bit_compute_allows_for_its_own_noise(chain, tiny_model_dir, runs_dir, monkeypatch):
    """Where fp32 does not fit on the GPU the check computes in the export dtype. On an H200 a correct
    merge then failed the fixed 0.25 near-tie gap (bf16 moves a random model's logits by up to ~2);
    the gap now widens to twice the logit noise measured between the two models."""
    run = runs_dir / "B"
    shutil.copytree(chain, run)
    shutil.rmtree(run / "export")
    monkeypatch.setattr(export, "check_dtype", lambda model, dtype, on_gpu: dtype)
    stage(export, "B", tiny_args(tiny_model_dir) + ["export.dtype=bfloat16", "export.check_new_tokens=32",
                                                     "export.check_prompts=8"])
    check = json.loads((run / "export" / "stage.json").read_text())["figures"]["merge_check"]
    turns = sum(m["role"] == "assistant" for x in read_log(run / "validate" / "eval.jsonl") for m in x["messages"])
    assert turns >= 3 and check["prompts"] == min(8, turns)  # every assistant turn of the held-out split, up to 8
    assert check["check_dtype"] == "bfloat16" and not check["mismatches"]
    assert check["near_tie_threshold"] == max(export.NEAR_TIE, 2 * check["merge_logit_error"])
    assert 0 < check["merge_logit_error"] < check["adapter_logit_effect"]


def test_a_merge_that_loses_the_adapter_is_refused(chain, tiny_model_dir, runs_dir, monkeypatch, capsys):
    from peft.tuners.lora import LoraModel

    run = runs_dir / "D"
    shutil.copytree(chain, run)
    shutil.rmtree(run / "export")
    monkeypatch.setattr(LoraModel, "merge_and_unload", lambda self, *a, **kw: self.unload())  # drops the adapter
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        stage(export, "D", tiny_args(tiny_model_dir))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "does not carry the adapter faithfully" in err and "Traceback" not in err
    assert not (run / "export").exists()
    fp32 = json.loads((chain / "export" / "stage.json").read_text())["figures"]["merge_check"]
    assert fp32["check_dtype"] == "float32" and fp32["merge_logit_error"] < fp32["adapter_logit_effect"] / 2


def test_merge_compare_near_tie_gap_follows_the_measured_noise():
    ref, out, gaps = [[1, 2, 3]], [[1, 2, 4]], [[5.0, 5.0, 0.3]]
    assert export.compare(ref, out, gaps)["mismatches"] == [0]
    assert export.compare(ref, out, gaps, noise=0.2)["near_ties"] == [0]
    assert export.compare(ref, ref, gaps)["identical"] == 1


# --- 3. bad recipes and names --------------------------------------------------------------------------

BAD = [
    (["lora.rank=8"], "unknown key `lora.rank`"),
    (["train.batch_size=two"], "`train.batch_size` must be int"),
    (["lora.r=0"], "`lora.r` is 0; it must be at least 1"),
    (["train.lr=-1e-4"], "`train.lr` is -0.0001; it must be positive"),  # YAML 1.1 reads -1e-4 as a string
    (["train.lr=-0.5"], "`train.lr` is -0.5; it must be positive"),
    (["train.batch_size=0"], "`train.batch_size` is 0; it must be at least 1"),
    (["data.train=data/no_such_file.jsonl"], "`data.train`: no file matches"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[o[0] for o, _ in BAD])
def test_bad_recipe_one_clear_message(overrides, message, runs_dir, capsys):
    with pytest.raises(RecipeError) as exc:
        recipe_mod.load(RECIPE, overrides)
    assert len(exc.value.problems) == 1 and message in exc.value.problems[0], exc.value.problems
    capsys.readouterr()
    with pytest.raises(SystemExit) as sysexit:
        stage(sft, "bad", overrides)
    assert sysexit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not runs_dir.exists(), "a refused recipe must not create its run folder"


def test_readme_lr_override_is_a_float():
    # README: `train.lr=1e-4`. YAML 1.1 reads a mantissa without a dot as a string.
    assert recipe_mod.load(RECIPE, ["train.lr=1e-4"]).train.lr == 1e-4
    assert recipe_mod.load(RECIPE, ["train.lr=5E-5", "lora.dropout=0"]).train.lr == 5e-5


def test_every_problem_listed_together(runs_dir, capsys):
    overrides = ["lora.rank=8", "train.batch_size=two", "lora.r=0", "train.lr=-1", "data.train=nope.jsonl"]
    with pytest.raises(RecipeError) as exc:
        recipe_mod.load(RECIPE, overrides)
    problems = exc.value.problems
    assert len(problems) == 5, problems
    capsys.readouterr()
    with pytest.raises(SystemExit) as sysexit:
        stage(sft, "bad", overrides)
    assert sysexit.value.code == 2
    err = capsys.readouterr().err
    assert "5 problem(s)" in err and err.count("error:") == 1 and "Traceback" not in err
    for needle in ("lora.rank", "train.batch_size", "lora.r`", "train.lr", "data.train"):
        assert needle in err


@pytest.mark.parametrize("name", ["../etc/passwd", "..", ".", "a/b", "/etc/passwd", "", "~root"])
def test_recipe_name_traversal_refused(name):
    with pytest.raises(RecipeError, match="not allowed"):
        recipe_mod.recipe_path(name)


@pytest.mark.parametrize("name", ["../../tmp/x", "..", ".", "a/b", "/tmp/x", "", "../x"])
def test_run_name_traversal_refused(name):
    with pytest.raises(RecipeError, match="not allowed"):
        recipe_mod.run_dir_for(name)


def test_traversal_through_the_cli_writes_nothing(runs_dir, tmp_path, capsys):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for argv in (["--recipe", "../etc/passwd"], ["--recipe", "..", "--run", "x"], ["--recipe", "a/b"],
                 ["--run", "../../tmp/x"], ["--run", ".."], ["--run", "../x"]):
        with pytest.raises(SystemExit) as exc:
            validate.main(argv)
        assert exc.value.code == 2, argv
        err = capsys.readouterr().err
        assert "not allowed" in err and "Traceback" not in err, (argv, err)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path.parent / "x").exists()


# --- 4. secrets in the environment never reach the disk ------------------------------------------------

def test_no_secret_in_any_file_of_the_run(chain):
    assert (chain / "evaluate" / "stage.json").is_file(), "the chain ran to the end"
    n = assert_no_secrets(chain)
    assert n > 30


# --- max_seq_length shorter than the tool-schema prompt ------------------------------------------------

def test_max_seq_length_below_the_prompt_is_refused_by_count(chain, tiny_model_dir, runs_dir, capsys):
    run = runs_dir / "S"
    run.mkdir(parents=True)
    shutil.copytree(chain / "validate", run / "validate")
    args = [*tiny_args(tiny_model_dir), "max_seq_length=64"]  # the 15-tool schema prompt alone is ~1k tokens
    capsys.readouterr()
    for attempt in range(3):  # the second run must refuse too, not find a "done" count stage
        with pytest.raises(SystemExit) as exc:
            stage(count, "S", args + (["data.too_long=fail"] if attempt == 2 else []))
        assert exc.value.code == 2, attempt
        err = " ".join(capsys.readouterr().err.split())
        if attempt < 2:  # data.too_long=split: not even the system prompt and tools fit
            assert "fits in no window of max_seq_length=64" in err and "The data needs max_seq_length >=" in err, err
        else:
            assert "longer than max_seq_length=64 (data.too_long=fail" in err, err
        assert "Traceback" not in err
        assert not (run / "count" / "stage.json").exists()
    # and training refuses to start from the tokens of a count that failed
    with pytest.raises(SystemExit) as exc:
        stage(sft, "S", args)
    assert exc.value.code == 2
    assert "run the count stage first" in capsys.readouterr().err


def test_out_of_memory_message_names_the_keys_to_change():
    from pipeline.lib.recipe import load
    from pipeline.stages.s4_sft import out_of_memory_message

    msg = out_of_memory_message(load("llama31-8b-tools"))
    assert "train.batch_size=2 train.grad_accum=8" in msg and "max_seq_length=2048" in msg
    assert "GiB" in msg and "make plan RECIPE=llama31-8b-tools" in msg
