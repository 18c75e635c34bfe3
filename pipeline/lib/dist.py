"""Several training processes (GPUs, machines) for the sft stage, through `accelerate launch`.

tooltune writes no distributed trainer: `accelerate launch` starts one process per GPU (torch's elastic launcher
underneath), transformers' Trainer wraps the model in DDP, or FSDP where the weights must be sharded, and
accelerate shards the batches. Here: who launches, which rank a process is, and which process writes.
"""

from __future__ import annotations

import os
import sys

from pipeline.lib import stages
from pipeline.lib.common import StageError


def world(recipe) -> int:
    return recipe.nproc * recipe.nnodes


def launched() -> bool:
    """This process was started by the launcher (it sets WORLD_SIZE and LOCAL_RANK)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def rank() -> int:
    return int(os.environ.get("RANK", 0)) if launched() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if launched() else 0


def is_main() -> bool:
    """The one process that writes the run's files: global rank 0 (on machine 0)."""
    return rank() == 0


def check(recipe, backend: str) -> None:
    if world(recipe) > 1 and backend == "unsloth":
        raise StageError(f"nproc={recipe.nproc}, nnodes={recipe.nnodes}: Unsloth does not officially support several GPUs; "
                         "train with the hf backend (ARGS=\"backend=hf\"), which runs under accelerate with DDP or FSDP.")


def launch_command(recipe, argv: list[str], on_gpu: bool) -> list[str]:
    """`accelerate launch` for this machine's `nproc` processes of the sft stage with `argv`. On CPUs the
    processes meet over gloo (the Trainer runs with use_cpu); on GPUs over NCCL."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(world(recipe)), "--num_machines", str(recipe.nnodes),
           "--machine_rank", str(recipe.node_rank), "--main_process_ip", recipe.master_addr,
           "--main_process_port", str(recipe.master_port), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if recipe.nnodes > 1:
        cmd += ["--rdzv_backend", "static", "--same_network"]
    if on_gpu:
        cmd += ["--gpu_ids", "all"]
    return cmd + ["-m", stages.stage("sft").import_name, *argv]


def barrier() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()
