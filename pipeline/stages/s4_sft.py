"""Stage 4, train: LoRA SFT on the assistant turns only, resumable.

    python -m pipeline.stages.s4_sft --recipe smollm2-135m-tools [train.lr=5e-4 ...]

Reads the count stage's token ids and loss masks (no second tokenization), audits the mask, and
trains with TRL's SFTTrainer. Writes runs/<RUN>/sft/:
  checkpoints/   resumable state (adapter, optimizer, scheduler, RNG, data position) every save_steps
  adapter/       the final LoRA adapter
  log.jsonl      one line per logging step (loss, learning rate, tokens/s)
  tensorboard/   event files, when train.report_to lists tensorboard (trackio: its own local database)
Interrupt it (Ctrl-C saves a checkpoint first, kill -9 loses at most save_steps) and run it
again: it resumes from the newest checkpoint of the same configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

from rich.table import Table

from pipeline.lib import dist
from pipeline.lib.backends import (TrainSettings, cpu_has_bf16, load_base, memory_now, param_counts, prepare_backend, resolve_backend,
                                   training_settings)
from pipeline.lib.common import (StageError, atomic_dir, console, fingerprint, read_jsonl, rel, stage_main, up_to_date, write_json_atomic,
                                 write_sidecar, write_text_atomic)
from pipeline.lib.packing import IGNORE, PackCollator, PrefixGroupedSampler
from pipeline.lib.recipe import Recipe
from pipeline.lib.trainer import make_trainer_class, sft_config

STAGE = "sft"


def read_tokens(path: Path) -> list[dict]:
    return [{"id": r["id"], "group": r.get("group", ""), "input_ids": r["input_ids"],
             "labels": [t if m else IGNORE for t, m in zip(r["input_ids"], r["mask"])]} for r in read_jsonl(path)]


def checkpoint_complete(path: Path) -> bool:
    """A checkpoint the Trainer finished writing: weights, optimizer, and trainer_state.json (written last)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return ("global_step" in state and (path / "optimizer.pt").is_file()
            and any(path.glob("*.safetensors")))


def audit(rows: list[dict], eot_id: int | None, max_len: int) -> dict:
    """The train-time mask audit: every example trains something, and every trained run ends with end-of-turn."""
    trained = total = 0
    for r in rows:
        labels = r["labels"][:max_len]
        n = sum(1 for x in labels if x != IGNORE)
        if n == 0:
            raise StageError(f"example {r['id']}: no token is trained (no assistant turn survived the mask).")
        if eot_id is not None:
            for k in range(len(labels)):
                end_of_run = labels[k] != IGNORE and (k + 1 == len(labels) or labels[k + 1] == IGNORE)
                if end_of_run and labels[k] != eot_id:
                    raise StageError(f"example {r['id']}: a trained assistant span ends without its end-of-turn token.")
        trained += n
        total += len(labels)
    return {"trained_tokens": trained, "total_tokens": total, "trained_share": round(trained / max(1, total), 4)}


def out_of_memory_message(recipe: Recipe) -> str:
    """What to change when the GPU runs out of memory, with the plan's estimate."""
    try:
        from pipeline.lib.planner import show_plan

        estimate = f" The plan estimated {show_plan(recipe)['total_gib']:.1f} GiB for this recipe."
    except Exception:
        estimate = ""
    fixes = [f"train.batch_size={max(1, recipe.train.batch_size // 2)} train.grad_accum={recipe.train.grad_accum * 2} "
             "(same conversations per step)"]
    if not recipe.train.gradient_checkpointing:
        fixes.append("train.gradient_checkpointing=true")
    if not recipe.load_in_4bit:
        fixes.append("load_in_4bit=true")
    fixes.append(f"max_seq_length={max(256, recipe.max_seq_length // 2)} (check `make count` first)")
    return ("the GPU ran out of memory while training." + estimate + " Change one of: " + "; ".join(fixes)
            + f". Then run the same command again: training resumes from the last checkpoint. `make plan RECIPE={recipe.name}` "
            "shows the breakdown.")


def sharding_for(recipe: Recipe) -> str:
    """ddp or fsdp for this launch: the recipe's `sharding`, or by the plan against this GPU's memory (CPUs: ddp)."""
    from pipeline.lib.backends import cuda_available
    from pipeline.lib.planner import sharding_choice

    if not cuda_available():
        if recipe.sharding == "fsdp":
            raise StageError("sharding=fsdp needs NVIDIA GPUs (accelerate runs FSDP on CUDA only): on CPUs the "
                             "processes train with sharding=ddp (or auto).")
        return "ddp"
    import torch

    capacity = torch.cuda.get_device_properties(dist.local_rank()).total_memory
    return sharding_choice(recipe, dist.world(recipe), capacity)


def fsdp_layers(model) -> list[str]:
    """The transformer block classes FSDP wraps one by one (what transformers itself keeps whole on a device)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(getattr(base, "_no_split_modules", None) or [])


def as_overrides(recipe: Recipe) -> list[str]:
    """The resolved recipe as key=value overrides (JSON values), so that every launched process trains exactly it."""
    out = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        else:
            out.append(f"{prefix[:-1]}={json.dumps(value)}")

    walk("", {k: v for k, v in recipe.to_dict().items() if k != "name"})
    return out


def launch(recipe: Recipe, run_dir: Path) -> Path:
    """Train under `accelerate launch`: this machine's processes, each running this stage with the same recipe."""
    import subprocess

    from pipeline.lib.backends import cuda_available

    argv = ["--recipe", recipe.name, "--run", run_dir.name, *as_overrides(recipe)]
    cmd = dist.launch_command(recipe, argv, cuda_available())
    console.print(f"train: {dist.world(recipe)} processes ({recipe.nproc} per machine on {recipe.nnodes} machine(s)), "
                  f"machine {recipe.node_rank}, meeting at {recipe.master_addr}:{recipe.master_port}")
    env = {**os.environ, "TOOLTUNE_ARGS": ""}  # the overrides above are the whole recipe already
    proc = subprocess.run(cmd, env=env)
    if proc.returncode:
        raise StageError(f"the {dist.world(recipe)} training processes stopped (exit {proc.returncode}); the messages "
                         "above say why. Run the same command again to resume from the newest checkpoint.")
    if recipe.node_rank:
        raise StageError(f"this machine (node_rank {recipe.node_rank} of {recipe.nnodes}) took part in training; the "
                         f"adapter and the run's files are written on machine 0 ({recipe.master_addr}): continue there.")
    if not (run_dir / STAGE / "stage.json").is_file():
        raise StageError("the training processes finished but wrote no adapter; the messages above say why.")
    return run_dir / STAGE / "adapter"


@contextlib.contextmanager
def env_set(**values: str):
    """Set environment variables for the block, then put back what was there."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def tracking_state(path: Path, run: str, resume: bool) -> dict:
    """The trackers' name for this training (`<RUN>-<start time>`): kept across a resume, so a tracker continues
    the same run; new when training starts over, so two trainings never mix their steps."""
    if resume and path.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())
    state = {"run_name": f"{run}-{time.strftime('%Y%m%d-%H%M%S')}"}
    write_json_atomic(path, state)
    return state


def keep_log_until(path: Path, step: int) -> None:
    """Drop log lines past `step` (the checkpoint training resumes from), which it logs again."""
    if not path.is_file():
        return
    kept = [x for x in path.read_text(encoding="utf-8").splitlines()
            if x.strip() and json.loads(x).get("step", 0) <= step]
    write_text_atomic(path, "".join(x + "\n" for x in kept))  # the lines as written, byte for byte


def require_trackers(recipe: Recipe) -> None:
    from pipeline.lib import backends
    from pipeline.lib.recipe import TRACKERS

    missing = [t for t in recipe.train.report_to if not backends.installed(TRACKERS[t])]
    if missing:
        raise StageError(f"train.report_to lists {', '.join(missing)}, not installed here: `.venv/bin/pip install "
                         f"{' '.join(TRACKERS[t] for t in missing)}`, or leave {'it' if len(missing) == 1 else 'them'} "
                         "out of train.report_to.")


def resume_point(ckpt_dir: Path, fp: str, main: bool) -> Path | None:
    """The newest complete checkpoint of this exact configuration and data, or None. Checkpoints of another
    fingerprint are removed; so is one cut off while being written (kill -9 or a full disk while the Trainer
    writes checkpoint-N leaves a folder transformers would pick as the newest and fail on)."""
    stamp = ckpt_dir / "fingerprint.txt"
    if main and ckpt_dir.exists() and (not stamp.is_file() or stamp.read_text() != fp):
        console.print("[yellow]train:[/] checkpoints are from another configuration or data; starting over.")
        shutil.rmtree(ckpt_dir)
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(stamp, fp)
    done = []
    for p in sorted(ckpt_dir.glob("checkpoint-*")):
        if not p.name.split("-", 1)[1].isdigit():
            continue
        if p.is_dir() and checkpoint_complete(p):
            done.append(p)
        elif p.is_dir() and main:
            console.print(f"[yellow]train:[/] {p.name} was cut off while being written; removing it.")
            shutil.rmtree(p)
    return max(done, key=lambda p: int(p.name.split("-", 1)[1]), default=None)


def log_callback(callback_base, log_path: Path, stats: dict, started: float, stop: dict):
    """The Trainer callback that appends each logged step to sft/log.jsonl and stops (saving) after Ctrl-C."""
    class Log(callback_base):
        def on_log(self, a, state, control, logs=None, **kw):
            if not state.is_world_process_zero:
                return
            entry = {"step": state.global_step, "epoch": state.epoch, **(logs or {}),
                     "real_tokens": stats.get("real_tokens"), "computed_tokens": stats.get("computed_tokens"),
                     "elapsed_s": round(time.time() - started, 1)}
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

        def on_step_end(self, a, state, control, **kw):
            if stop["requested"]:
                control.should_save = True
                control.should_training_stop = True

    return Log()


def sft_figures(recipe: Recipe, trainer, result, settings: TrainSettings, stats: dict, model, train_s: float, *,
                backend: str, packing: str, mask_audit: dict, resumed: bool, cpu_autocast: bool, sharding: str,
                tb_dir: Path, run_name: str | None) -> dict:
    """sft/figures.json: what the training did, how fast, on what."""
    history = [h for h in trainer.state.log_history if "loss" in h]
    return {
        "backend": backend,
        "packing": packing,
        "settings": settings.to_dict(),
        "steps": trainer.state.global_step,
        "final_loss": history[-1]["loss"] if history else None,
        "train_loss": result.training_loss,
        "train_seconds": round(train_s, 1),
        "conversations_per_s": round(stats.get("conversations", 0) / train_s, 3),
        "real_tokens_per_s": round(stats.get("real_tokens", 0) / train_s, 1),
        "computed_tokens": stats.get("computed_tokens", 0),
        "padding_share": round(stats.get("pad_tokens", 0) / max(1, stats.get("computed_tokens", 1)), 4),
        "mask_audit": mask_audit,
        "parameters": param_counts(model),
        "memory": memory_now(),
        "resumed": resumed,
        "cpu_bf16_autocast": cpu_autocast,
        "report_to": list(recipe.train.report_to),
        "processes": dist.world(recipe),
        "sharding": sharding if sharding != "fsdp" or trainer.is_fsdp_enabled else "fsdp requested, not applied",
        "global_batch": settings.batch * settings.grad_accum * dist.world(recipe),
        "tracking": {"tensorboard": str(rel(tb_dir)) if "tensorboard" in recipe.train.report_to else None,
                     "trackio": {"project": "tooltune", "run": run_name}
                     if "trackio" in recipe.train.report_to else None},
    }


def run(recipe: Recipe, run_dir: Path) -> Path:
    started = time.time()
    out = run_dir / "sft"
    require_trackers(recipe)
    tokens = run_dir / "count" / "train.tokens.jsonl"
    if not tokens.is_file() or not (run_dir / "count" / "stage.json").is_file():
        raise StageError(f"run the count stage first: {rel(tokens.parent / 'stage.json')} is missing (make count).")
    fp = fingerprint(recipe, STAGE, [tokens], ("model", "tokenizer", "chat_template", "tool_format", "backend",
                                               "load_in_4bit", "dtype", "cpu_bf16", "max_seq_length", "seed", "task", "lora", "train",
                                               "nproc", "nnodes", "sharding",
                                               "trust_remote_code"))
    if up_to_date(out, fp) and (out / "adapter" / "adapter_config.json").is_file():
        console.print(f"[dim]{STAGE}: inputs unchanged, nothing to do[/]")
        return out / "adapter"

    backend, why = resolve_backend(recipe)
    dist.check(recipe, backend)
    if dist.world(recipe) > 1 and not dist.launched():
        return launch(recipe, run_dir)
    prepare_backend(backend)  # Unsloth first: it patches only what is imported after it
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback, set_seed
    from trl import SFTTrainer

    settings = training_settings(recipe, backend)
    set_seed(recipe.seed)
    sharding = sharding_for(recipe) if dist.world(recipe) > 1 else "none"
    model, tok = load_base(recipe, backend, fsdp=sharding == "fsdp")
    from pipeline.lib.template import Chat

    chat = Chat.for_recipe(recipe, tok)
    eot_id = tok.convert_tokens_to_ids(chat.eot) if chat.eot in tok.get_vocab() else None
    rows = [r for r in read_tokens(tokens) if len(r["input_ids"]) <= recipe.max_seq_length]
    mask_audit = audit(rows, eot_id, recipe.max_seq_length)
    console.print(f"train: backend [bold]{backend}[/] ({why}); {len(rows)} conversations; "
                  f"mask audit passed, {mask_audit['trained_share']:.1%} of tokens trained")

    packing = settings.packing
    if packing != recipe.train.packing:
        console.print("[yellow]note:[/] Unsloth's attention kernels take no custom block mask: packing falls back to padded batches.")
    attn_impl = getattr(model.config, "_attn_implementation", "sdpa")
    stats: dict = {}
    collator = PackCollator(pad_id=tok.pad_token_id, mode=packing, max_pack_tokens=recipe.train.max_pack_tokens,
                            mask_kind="float" if attn_impl == "eager" else "bool", dtype=model.dtype, stats=stats)

    ckpt_dir = out / "checkpoints"
    main = dist.is_main()  # every process decides the same from the same files; only the main one changes them
    newest = resume_point(ckpt_dir, fp, main)
    resume = newest is not None
    log_path = out / "log.jsonl"
    tb_dir = out / "tensorboard"
    tracking = tracking_state(out / "tracking.json", run_dir.name, resume) if main else {"run_name": None}
    if resume and main:  # steps after the checkpoint are trained, and logged, again
        keep_log_until(log_path, int(newest.name.split("-", 1)[1]))
    elif main:  # a log (or tracker files) of an earlier configuration is not this run's
        log_path.unlink(missing_ok=True)
        shutil.rmtree(tb_dir, ignore_errors=True)

    use_cpu = not torch.cuda.is_available()
    autocast = recipe.cpu_bf16
    if autocast and use_cpu and not cpu_has_bf16():
        console.print("[yellow]note:[/] this CPU has no AMX/AVX512-BF16: bf16 autocast would be slower; training in fp32.")
        autocast = False
    args = sft_config(recipe, settings, ckpt_dir, use_cpu=use_cpu, autocast=autocast, model_dtype=model.dtype,
                      run_name=tracking["run_name"], fsdp_layers=fsdp_layers(model) if sharding == "fsdp" else None)
    dist.barrier()  # the processes meet here (the arguments set them up): the main one has tidied the folder
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])

    stop = {"requested": False}
    log = log_callback(TrainerCallback, log_path, stats, started, stop)

    def on_sigint(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        console.print("\n[yellow]Ctrl-C:[/] saving a checkpoint after this step (press again to quit now).")

    trainer_class = make_trainer_class(SFTTrainer)
    if packing == "shared_prefix":
        # Grouped by the global batch: accelerate hands each process its consecutive share of every one
        sampler = PrefixGroupedSampler([r["group"] for r in rows], [len(r["input_ids"]) for r in rows],
                                       settings.batch * dist.world(recipe), recipe.seed)

        class GroupedTrainer(trainer_class):
            def _get_train_sampler(self, train_dataset=None):
                return sampler

        trainer_class = GroupedTrainer
    with env_set(TENSORBOARD_LOGGING_DIR=str(tb_dir)):  # read when the Trainer builds its TensorBoard callback
        trainer = trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collator,
                                processing_class=tok, callbacks=[log])
    console.print(f"train: {len(rows)} conversations x {recipe.train.epochs} epoch(s), "
                  f"{recipe.train.batch_size} x {recipe.train.grad_accum} per step, packing={packing}"
                  + (", resuming from the newest checkpoint" if resume else ""))
    previous = signal.signal(signal.SIGINT, on_sigint)
    t0 = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=str(newest) if resume else None)
    except torch.cuda.OutOfMemoryError:
        raise StageError(out_of_memory_message(recipe)) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    train_s = time.time() - t0
    if stop["requested"]:
        raise KeyboardInterrupt

    if not main:  # the main process writes the adapter and the figures
        return out / "adapter"
    with atomic_dir(out / "adapter") as tmp:
        trainer.accelerator.unwrap_model(model).save_pretrained(tmp)
        tok.save_pretrained(tmp)
    figures = sft_figures(recipe, trainer, result, settings, stats, model, train_s, backend=backend, packing=packing,
                          mask_audit=mask_audit, resumed=resume, cpu_autocast=bool(use_cpu and autocast), sharding=sharding,
                          tb_dir=tb_dir, run_name=tracking["run_name"])
    write_json_atomic(out / "figures.json", figures)
    t = Table(title="sft", show_header=False)
    for k in ("backend", "packing", "steps", "final_loss", "train_seconds", "conversations_per_s", "real_tokens_per_s", "padding_share"):
        t.add_row(k, str(figures[k]))
    console.print(t)
    write_sidecar(out, STAGE, recipe, [tokens], fp, started, figures)
    return out / "adapter"


def main(argv=None):
    stage_main(STAGE, run, argv)


if __name__ == "__main__":
    main()
