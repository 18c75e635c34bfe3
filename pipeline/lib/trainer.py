"""The Trainer and the one SFTConfig builder: the sft stage, the benchmarks and the GPU checks train through these."""

from __future__ import annotations

from pathlib import Path

from pipeline.lib.backends import TrainSettings, optimizer_name
from pipeline.lib.packing import IGNORE
from pipeline.lib.recipe import Recipe


def trained_positions_loss(model, inputs: dict, num_items_in_batch=None):
    """Cross-entropy computed only where a label is trained.

    The LM head is the priciest layer of a small model (SmolLM2: 576 x 49,152, about a fifth of
    its FLOPs per token), and ~11% of the bundled data's tokens are trained. transformers'
    `logits_to_keep` takes the positions to project, so the head runs only where the next token
    is a target: the same loss as the model's own, for less compute and memory.
    """
    import torch.nn.functional as F

    inputs = dict(inputs)
    labels = inputs.pop("labels")
    targets = labels[:, 1:]
    keep = (targets != IGNORE).any(0).nonzero().squeeze(1)
    out = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = out.logits.float()
    picked = targets[:, keep]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), picked.reshape(-1), ignore_index=IGNORE, reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else (picked != IGNORE).sum().clamp(min=1)
    return loss / denom


def make_trainer_class(base):
    """TRL's SFTTrainer; where TRL's Triton kernels are missing, the loss is computed by
    `trained_positions_loss` instead.

    TRL 1.15 computes the loss with a fused, chunked LM head written in Triton (memory-saving on a
    GPU). The CPU build of torch ships no Triton, so there the same cross-entropy over the same
    labels is computed in plain torch, on the trained positions only.
    """
    from trl.trainer import utils as trl_utils

    if getattr(trl_utils, "_ChunkedLogProbFunction", None) is not None:
        return base

    class CpuSFTTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = trained_positions_loss(model, inputs, num_items_in_batch)
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # divided by the tokens of every process's batch; DDP then averages the gradients over the
                # processes: scaled back, as transformers' own compute_loss does, it is the global token mean
                loss = loss * self.accelerator.num_processes
            return (loss, None) if return_outputs else loss

        def _load_optimizer_and_scheduler(self, checkpoint):
            # With several processes transformers maps the optimizer state to args.device, which on CPUs is
            # "cpu:0", a location torch.load cannot map to: map it to the CPU, where it is anyway.
            import torch

            real = torch.load

            def load(*a, **kw):
                if str(kw.get("map_location", "")).startswith("cpu"):
                    kw["map_location"] = "cpu"
                return real(*a, **kw)

            torch.load = load
            try:
                return super()._load_optimizer_and_scheduler(checkpoint)
            finally:
                torch.load = real

    return CpuSFTTrainer


def sft_config(recipe: Recipe, settings: TrainSettings, output_dir: Path, *, use_cpu: bool, autocast: bool = False,
               model_dtype=None, run_name: str | None = None, fsdp_layers: list[str] | None = None):
    """TRL's SFTConfig for this recipe and its resolved settings (the same ones `make plan` uses)."""
    import torch
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.batch,
        gradient_accumulation_steps=settings.grad_accum,
        num_train_epochs=recipe.train.epochs,
        max_steps=recipe.train.max_steps,
        learning_rate=recipe.train.lr,
        lr_scheduler_type=recipe.train.scheduler,
        warmup_steps=recipe.train.warmup_ratio,
        weight_decay=recipe.train.weight_decay,
        neftune_noise_alpha=recipe.train.neftune_alpha,
        optim=optimizer_name(recipe, settings),
        logging_steps=recipe.train.logging_steps,
        save_strategy="steps",
        save_steps=recipe.train.save_steps,
        save_total_limit=recipe.train.save_total_limit,
        seed=recipe.seed,
        data_seed=recipe.seed,
        use_cpu=use_cpu,
        bf16=(not use_cpu and model_dtype == torch.bfloat16) or (use_cpu and autocast),
        fp16=not use_cpu and model_dtype == torch.float16,
        # Unsloth checkpoints inside its own kernels ("unsloth" mode, set when the model is wrapped);
        # asking the Trainer too would checkpoint twice.
        gradient_checkpointing=settings.grad_ckpt and settings.backend != "unsloth",
        report_to=list(recipe.train.report_to) or "none",
        run_name=run_name,
        project="tooltune",  # trackio's project
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        dataloader_num_workers=0,
        disable_tqdm=False,
        save_only_model=False,
        # FSDP (sharding=fsdp): every block sharded across the processes; LoRA's trainable and frozen weights
        # share blocks, hence use_orig_params
        fsdp="full_shard auto_wrap" if fsdp_layers else "",
        fsdp_config={"transformer_layer_cls_to_wrap": fsdp_layers, "use_orig_params": True,
                     "sync_module_states": True} if fsdp_layers else None,
    )
