"""The sft stage in several processes through `accelerate launch` (gloo on CPU): the same global batch gives the
same losses and adapter as one process, a killed run resumes, and two "machines" meet on loopback only."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.lib.recipe import ROOT
from pipeline.stages import s1_validate as validate
from pipeline.stages import s2_count as count
from pipeline.stages import s3_load as load

STEPS = 6


def base_args(model_dir) -> list[str]:
    return [f"model={model_dir}", "cpu_bf16=false", "data.max_train=24", "data.eval_max=2", f"train.max_steps={STEPS}",
            "train.save_steps=2", "train.logging_steps=1", "train.lr=1e-3", "train.warmup_ratio=0.0"]


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prepared(tiny_model_dir, tmp_path_factory) -> Path:
    """validate, count and load of the tiny run, once: each training below starts from a copy of them."""
    runs = tmp_path_factory.mktemp("dist") / "runs"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOOLTUNE_RUNS", str(runs))
        for module in (validate, count, load):
            module.main(["--recipe", "smollm2-135m-tools", "--run", "base", *base_args(tiny_model_dir)])
    return runs / "base"


def sft_cmd(run: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pipeline.stages.s4_sft", "--recipe", "smollm2-135m-tools", "--run", run, *args]


def env_for(runs: Path) -> dict:
    return {**os.environ, "TOOLTUNE_RUNS": str(runs), "OMP_NUM_THREADS": "1", "TOOLTUNE_ARGS": ""}


def fresh_run(prepared: Path, runs: Path, name: str) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    for stage in ("validate", "count", "load"):
        shutil.copytree(prepared / stage, run / stage)
    return run


def train(prepared, runs, name, args, timeout=900) -> subprocess.CompletedProcess:
    fresh_run(prepared, runs, name)
    r = subprocess.run(sft_cmd(name, args), cwd=ROOT, env=env_for(runs), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def losses(run: Path) -> list[float]:
    return [e["loss"] for e in map(json.loads, (run / "sft" / "log.jsonl").read_text().splitlines()) if "loss" in e]


def adapter(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "sft" / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5), (k, (a[k] - b[k]).abs().max().item())


@pytest.fixture(scope="module")
def two_ways(prepared, tiny_model_dir, tmp_path_factory):
    """The same 6 steps of 4 conversations: one process with batches of 4, two processes with batches of 2."""
    runs = tmp_path_factory.mktemp("dist-runs")
    args = base_args(tiny_model_dir)
    train(prepared, runs, "one", args + ["train.batch_size=4"])
    out = train(prepared, runs, "two", args + ["train.batch_size=2", "nproc=2", f"master_port={port()}"])
    return runs, out


def test_two_processes_give_the_losses_and_adapter_of_one(two_ways):
    runs, out = two_ways
    assert "2 processes (2 per machine on 1 machine(s))" in out.stdout.replace("\n", " ")
    one, two = losses(runs / "one"), losses(runs / "two")
    assert len(one) == len(two) == STEPS
    assert two == pytest.approx(one, rel=1e-4)
    assert_same_adapter(adapter(runs / "one"), adapter(runs / "two"))
    figures = json.loads((runs / "two" / "sft" / "figures.json").read_text())
    assert figures["processes"] == 2 and figures["global_batch"] == 4 and figures["steps"] == STEPS
    side = json.loads((runs / "two" / "sft" / "stage.json").read_text())
    assert side["recipe"]["nproc"] == 2
    # one writer: one log line per step, one adapter, no stray files from the second process
    assert len((runs / "two" / "sft" / "log.jsonl").read_text().splitlines()) == STEPS + 1


def test_a_killed_two_process_run_resumes_to_the_same_adapter(prepared, two_ways, tiny_model_dir):
    runs, _ = two_ways
    fresh_run(prepared, runs, "killed")
    args = base_args(tiny_model_dir) + ["train.batch_size=2", "nproc=2", f"master_port={port()}"]
    proc = subprocess.Popen(sft_cmd("killed", args), cwd=ROOT, env=env_for(runs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = runs / "killed" / "sft" / "checkpoints" / "checkpoint-4"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (ckpt / "trainer_state.json").is_file():
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.5)
    import psutil

    # as a crash would: the stage, the launcher and both training processes (the launcher starts them in
    # sessions of their own, so the process group alone would not reach them)
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    for pid in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=30)
    assert not (runs / "killed" / "sft" / "stage.json").exists()
    r = subprocess.run(sft_cmd("killed", args[:-1] + [f"master_port={port()}"]), cwd=ROOT, env=env_for(runs),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming from the newest checkpoint" in r.stdout.replace("\n", " ")
    assert_same_adapter(adapter(runs / "two"), adapter(runs / "killed"))
    assert losses(runs / "killed") == pytest.approx(losses(runs / "two"), rel=1e-4)


def own_network_namespace() -> bool:
    """Can this machine give a process a network namespace of its own (root, unshare, ip, and the right to)?"""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True).returncode == 0


@pytest.mark.skipif(not own_network_namespace(), reason="a network namespace of its own needs root, unshare and ip")
def test_two_machines_on_loopback_only(prepared, two_ways, tiny_model_dir, tmp_path):
    """Two "machines" (one process each, their own run folders) in a network namespace that has nothing but
    127.0.0.1: they can contact nothing else, and finish the sft stage as the single machine with two processes."""
    runs, _ = two_ways
    m0, m1 = tmp_path / "machine0", tmp_path / "machine1"
    fresh_run(prepared, m0, "pair")
    fresh_run(prepared, m1, "pair")
    p = port()
    common = base_args(tiny_model_dir) + ["train.batch_size=2", "nnodes=2", "master_addr=127.0.0.1", f"master_port={p}"]
    script = (f"ip link set lo up && {{ TOOLTUNE_RUNS={m1} {' '.join(map(shlex_quote, sft_cmd('pair', common + ['node_rank=1'])))}"
              f" > {tmp_path}/m1.log 2>&1; echo $? > {tmp_path}/m1.rc; }} & "
              f"TOOLTUNE_RUNS={m0} {' '.join(map(shlex_quote, sft_cmd('pair', common + ['node_rank=0'])))} > {tmp_path}/m0.log 2>&1;"
              f" echo $? > {tmp_path}/m0.rc; wait")
    r = subprocess.run(["unshare", "--net", "sh", "-c", script], cwd=ROOT, env={**env_for(m0), "TOOLTUNE_RUNS": ""},
                       timeout=900)
    assert r.returncode == 0
    m0_log, m1_log = (tmp_path / "m0.log").read_text(), (tmp_path / "m1.log").read_text()
    assert (tmp_path / "m0.rc").read_text().strip() == "0", m0_log[-3000:]
    assert (tmp_path / "m1.rc").read_text().strip() == "2", m1_log[-3000:]
    assert "took part in training" in m1_log.replace("\n", " ")
    assert (m0 / "pair" / "sft" / "stage.json").is_file() and not (m1 / "pair" / "sft" / "stage.json").exists()
    assert_same_adapter(adapter(runs / "two"), adapter(m0 / "pair"))


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def test_unsloth_on_several_gpus_names_the_hf_backend():
    from pipeline.lib import dist
    from pipeline.lib.common import StageError
    from pipeline.lib.recipe import load as load_recipe

    recipe = load_recipe("smollm2-135m-tools", ["nproc=2"])
    with pytest.raises(StageError, match="backend=hf"):
        dist.check(recipe, "unsloth")
    dist.check(recipe, "hf")
    cmd = dist.launch_command(load_recipe("smollm2-135m-tools", ["nproc=4", "nnodes=2", "node_rank=1",
                                                                 "master_addr=10.0.0.5"]), ["--run", "x"], True)
    text = " ".join(cmd)
    assert "--num_processes 8 --num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.5" in text
    assert text.endswith("-m pipeline.stages.s4_sft --run x")


def test_fsdp_on_cpus_is_refused_with_the_fix(prepared, tiny_model_dir, tmp_path):
    """accelerate runs FSDP on CUDA only: asked for on CPUs, the stage says so before training, not after."""
    fresh_run(prepared, tmp_path, "fsdp")
    r = subprocess.run(sft_cmd("fsdp", base_args(tiny_model_dir) + ["nproc=2", "sharding=fsdp", f"master_port={port()}"]),
                       cwd=ROOT, env=env_for(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "sharding=ddp" in (r.stdout + r.stderr).replace("\n", " ")
    assert not (tmp_path / "fsdp" / "sft" / "stage.json").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available() or __import__("torch").cuda.device_count() < 2,
                    reason="FSDP needs two NVIDIA GPUs")
def test_fsdp_shards_the_same_training(prepared, two_ways, tiny_model_dir):
    """sharding=fsdp on two GPUs: the blocks sharded across the processes, the losses of one process."""
    runs, _ = two_ways
    train(prepared, runs, "fsdp", base_args(tiny_model_dir) + ["backend=hf", "train.batch_size=2", "nproc=2",
                                                               "sharding=fsdp", f"master_port={port()}"])
    figures = json.loads((runs / "fsdp" / "sft" / "figures.json").read_text())
    assert figures["sharding"] == "fsdp" and figures["steps"] == STEPS
    assert len(losses(runs / "fsdp")) == STEPS and (runs / "fsdp" / "sft" / "adapter" / "adapter_model.safetensors").is_file()
