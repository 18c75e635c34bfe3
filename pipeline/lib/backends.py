"""Backends: who loads the base model and wraps it with LoRA.

- unsloth: FastLanguageModel (4-bit NF4 + fused kernels on an NVIDIA GPU; Unsloth's own CPU mode
  without 4-bit elsewhere). Imported lazily, inside this module only: importing unsloth patches
  transformers, which must not happen in a run that chose another backend.
- hf: transformers + bitsandbytes NF4 (double quantization, bf16 compute) + PEFT, trained by TRL.
- cpu: hf without quantization, fp32. The embedded default and the tests use it.
- auto: unsloth if there is a CUDA GPU and unsloth is installed, else hf on a GPU, else cpu.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import asdict, dataclass

from pipeline.lib.common import StageError, console
from pipeline.lib.models import resolve
from pipeline.lib.recipe import Recipe


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: without them bf16 autocast on a CPU is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_backend(recipe: Recipe) -> tuple[str, str]:
    """(backend, why) for this machine; a StageError if the recipe cannot run here."""
    gpu = cuda_available()
    has_unsloth = installed("unsloth")
    if recipe.load_in_4bit and not gpu:
        raise StageError(
            f"recipe {recipe.name} loads the base in 4-bit (load_in_4bit: true), which needs an NVIDIA GPU with CUDA; "
            "this machine has none. Run it on a GPU machine (`make gpu-check` there first), or try the chain on CPU "
            "with `make train` (the embedded SmolLM2 default)."
        )
    if recipe.load_in_4bit and not (has_unsloth or installed("bitsandbytes")):
        raise StageError("4-bit loading needs unsloth or bitsandbytes: run `make venv` on the GPU machine (it installs the GPU extras).")
    b = recipe.backend
    if b == "auto":
        if gpu and has_unsloth:
            return "unsloth", "a CUDA GPU and unsloth are present: 4-bit loading and Unsloth's fused kernels"
        if gpu:
            return "hf", "a CUDA GPU but no unsloth: transformers + bitsandbytes + PEFT + TRL"
        return "cpu", ("no CUDA GPU: Unsloth's 4-bit loading and fused kernels need one, so auto takes plain "
                       "transformers + PEFT in fp32 (set backend=unsloth to use Unsloth's CPU mode)")
    if b == "unsloth" and not has_unsloth:
        raise StageError("backend=unsloth but unsloth is not installed: run `make venv` on a machine with an NVIDIA GPU "
                         "(it installs the GPU extras), or pick backend=auto.")
    if b == "hf" and not gpu and recipe.load_in_4bit:
        raise StageError("backend=hf with load_in_4bit needs a CUDA GPU.")
    return b, "chosen by the recipe"


def gpu_backend(recipe: Recipe) -> str:
    """The backend this recipe trains with on an NVIDIA GPU with the GPU extras installed: what
    `make plan` plans for, wherever it runs."""
    return "unsloth" if recipe.backend == "auto" else recipe.backend


def prepare_backend(backend: str) -> None:
    """Import Unsloth before transformers, TRL and PEFT when it trains: it patches only what is
    imported after it. A no-op for the other backends."""
    if backend == "unsloth":
        os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
        import unsloth  # noqa: F401


@dataclass(frozen=True)
class TrainSettings:
    """What training does with a recipe on a backend. `make plan` and the load and train stages all
    take it from `training_settings`, so the memory plan describes the run that happens."""

    backend: str
    batch: int
    grad_accum: int
    seq: int
    bits: int  # the frozen base: 4 (NF4), 16 or 32
    optim_bits: int  # Adam's states: 8 (bitsandbytes) or 32
    grad_ckpt: bool  # recompute each layer in the backward pass
    ckpt_offload: bool  # Unsloth's checkpointing keeps the layer inputs in CPU RAM, not on the GPU
    packing: str  # shared_prefix | none
    chunked_loss: bool  # the LM head and loss run a slice of the logits at a time (Unsloth, TRL on a GPU)

    def to_dict(self) -> dict:
        return asdict(self)


def training_settings(recipe: Recipe, backend: str) -> TrainSettings:
    ckpt = recipe.train.gradient_checkpointing
    packing = recipe.train.packing
    if packing == "shared_prefix" and backend == "unsloth":
        packing = "none"  # Unsloth's attention kernels take no custom block mask
    if recipe.load_in_4bit:
        bits = 4
    else:
        bits = 32 if recipe.dtype == "float32" or (backend == "cpu" and recipe.dtype == "auto") else 16
    return TrainSettings(
        backend=backend, batch=recipe.train.batch_size, grad_accum=recipe.train.grad_accum, seq=recipe.max_seq_length,
        bits=bits, optim_bits=8 if "8bit" in recipe.train.optim and backend != "cpu" else 32,
        grad_ckpt=ckpt, ckpt_offload=ckpt and backend == "unsloth", packing=packing,
        chunked_loss=backend in ("unsloth", "hf"))


def optimizer_name(recipe: Recipe, settings: TrainSettings) -> str:
    """bitsandbytes' 8-bit Adam needs CUDA: on a CPU the same recipe runs 32-bit AdamW."""
    return recipe.train.optim if settings.optim_bits == 8 or "8bit" not in recipe.train.optim else "adamw_torch"


def compute_dtype(recipe: Recipe, backend: str):
    import torch

    if recipe.dtype != "auto":
        return getattr(torch, recipe.dtype)
    if backend != "cpu" and cuda_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def lora_config_kwargs(recipe: Recipe, n_layers: int | None = None) -> dict:
    kw = dict(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora.dropout,
              target_modules=list(recipe.lora.target_modules), use_rslora=recipe.lora.use_rslora, bias="none")
    top = recipe.lora.top_layers
    if top and n_layers and top < n_layers:
        kw["layers_to_transform"] = list(range(n_layers - top, n_layers))
    return kw


def n_layers_of(model) -> int | None:
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    return getattr(cfg, "num_hidden_layers", None)


def _warn_remote_code(recipe: Recipe) -> None:
    if recipe.trust_remote_code:
        console.print(f"[bold yellow]warning:[/] trust_remote_code is on: Python files shipped with {recipe.model} will run.")


def nf4_config(compute_dtype, fsdp: bool = False):
    """QLoRA's 4-bit base: NF4 with double quantization (Dettmers et al. 2023), computing in `compute_dtype`.
    Under FSDP the packed 4-bit weights are stored in `compute_dtype` too, so that FSDP can shard them with the
    rest (bitsandbytes' and PEFT's way of QLoRA with FSDP)."""
    from transformers import BitsAndBytesConfig

    extra = {"bnb_4bit_quant_storage": compute_dtype} if fsdp else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, **extra)


def unsloth_peft_kwargs(recipe: Recipe, settings: TrainSettings, n_layers: int | None) -> dict:
    """FastLanguageModel.get_peft_model's arguments: "unsloth" checkpointing offloads to CPU RAM."""
    return dict(**lora_config_kwargs(recipe, n_layers),
                use_gradient_checkpointing="unsloth" if settings.grad_ckpt else False,
                random_state=recipe.seed, max_seq_length=recipe.max_seq_length)


def load_base(recipe: Recipe, backend: str, *, path: str | None = None, trainable: bool = True, fsdp: bool = False):
    """(model, tokenizer) with LoRA attached when `trainable`; `path` overrides the recipe's model."""
    import torch

    where = path or resolve(recipe.model, "model")
    dtype = compute_dtype(recipe, backend)
    settings = training_settings(recipe, backend)
    _warn_remote_code(recipe)
    if backend == "unsloth":
        prepare_backend(backend)
        from unsloth import FastLanguageModel  # lazy on purpose: it patches transformers

        model, tok = FastLanguageModel.from_pretrained(
            model_name=where, max_seq_length=recipe.max_seq_length, dtype=dtype,
            load_in_4bit=recipe.load_in_4bit, trust_remote_code=recipe.trust_remote_code,
        )
        if trainable:
            model = FastLanguageModel.get_peft_model(model, **unsloth_peft_kwargs(recipe, settings, n_layers_of(model)))
        return model, tok

    from transformers import AutoModelForCausalLM

    kwargs = dict(dtype=dtype, trust_remote_code=recipe.trust_remote_code, use_safetensors=True)
    gpu = int(os.environ.get("LOCAL_RANK", 0))  # under `accelerate launch`, each process its own GPU
    if backend == "hf" and recipe.load_in_4bit:
        kwargs["quantization_config"] = nf4_config(dtype, fsdp)
    if backend == "hf" and cuda_available() and not fsdp:  # FSDP places the shards itself
        kwargs["device_map"] = {"": gpu}
    kwargs["attn_implementation"] = "sdpa"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    from pipeline.lib.models import load_tokenizer

    tok = load_tokenizer(recipe)
    if not trainable:
        return model, tok
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if recipe.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.grad_ckpt)
    elif settings.grad_ckpt:
        model.enable_input_require_grads()
    torch.manual_seed(recipe.seed)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora_config_kwargs(recipe, n_layers_of(model))))
    return model, tok


def param_counts(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "trainable_share": round(trainable / max(1, total), 6)}


def memory_now() -> dict:
    import psutil

    out = {"rss_gb": round(psutil.Process().memory_info().rss / 2**30, 3)}
    if cuda_available():
        import torch

        out["cuda_allocated_gb"] = round(torch.cuda.memory_allocated() / 2**30, 3)
        out["cuda_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return out
