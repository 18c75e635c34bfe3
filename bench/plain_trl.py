"""The plain TRL + PEFT script the benchmarks compare against: TRL's SFTConfig with the plain script's own
choices, and PEFT's LoraConfig. One definition, used by `make bench`, `make gpu-check` and `make gpu-rehearsal`;
by design not the sft stage's builder (pipeline.lib.trainer.sft_config), which is what is measured against it."""

from __future__ import annotations

from pathlib import Path


def plain_sft_config(output_dir: Path | str, *, batch: int, steps: int, lr: float, use_cpu: bool, bf16: bool = False,
                     fp16: bool = False, optim: str = "adamw_torch", scheduler: str = "constant", seed: int = 0,
                     grad_ckpt: bool = False, **extra):
    """SFTConfig of the plain script: one micro-batch per step, a log line per step, no checkpoints, no trackers."""
    from trl import SFTConfig

    return SFTConfig(output_dir=str(output_dir), per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                     max_steps=steps, learning_rate=lr, lr_scheduler_type=scheduler, warmup_steps=0, optim=optim,
                     logging_steps=1, save_strategy="no", seed=seed, data_seed=seed, use_cpu=use_cpu, bf16=bf16,
                     fp16=fp16, gradient_checkpointing=grad_ckpt, report_to="none", dataloader_num_workers=0,
                     disable_tqdm=True, **extra)


def plain_lora(r: int, alpha: int, dropout: float, targets, rslora: bool = True):
    """PEFT's LoraConfig as the plain script writes it (SFTTrainer wraps the model with it)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), use_rslora=rslora,
                      task_type="CAUSAL_LM")
