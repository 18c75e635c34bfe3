"""Miniatures of the published recipes' base models, laid out as a Hugging Face cache.

Each miniature is built from the base model's real `config.json` and `generation_config.json`
(../shared/fixtures/models) and the family's real tokenizer and chat template
(../shared/fixtures/tokenizers): the same architecture class, special token ids, rope settings,
generation config and template, with the dimensions shrunk (2 layers, hidden 64) and random
weights. `full_size=True` keeps the real dimensions (the GPU rehearsal).

The one place the tests pretend is where a user's machine gets its weights: the miniatures are
written into a Hugging Face cache (HF_HOME) under the recipe's own hub ids, exactly where
`huggingface-cli download` puts them, and every stage loads them from there offline through its
ordinary code path. A pre-quantized `-bnb-4bit` id holds the 16-bit miniature: NF4 needs a GPU.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Base:
    model: str  # folder under fixtures/models
    tokenizer: str  # folder under fixtures/tokenizers
    architecture: str  # the class the recipe's checkpoint loads as
    stand_in_tokenizer: bool = False  # the fixtures ship no tokenizer of this family
    note: str = ""


# Per recipe: where its miniature comes from. The 16-bit twin id is the export's base_16bit().
BASES = {
    "llama31-8b-tools": Base("llama3_1_8b_instruct/unsloth_bnb_4bit", "llama3_1_instruct", "LlamaForCausalLM"),
    "llama31-70b-tools": Base("llama3_1_70b_instruct", "llama3_1_instruct", "LlamaForCausalLM"),
    "qwen25-7b-tools": Base("qwen2_5_7b_instruct", "qwen2_5_instruct", "Qwen2ForCausalLM"),
    "mistral-7b-tools": Base("mistral_7b_instruct_v0_3", "mistral_7b_instruct_v0_3", "MistralForCausalLM"),
    # Unsloth's Phi-3.5 copy is "llamafied" (separate q/k/v and gate/up projections, LlamaForCausalLM,
    # longrope kept); the fixtures have no Phi or Llama 2 tokenizer, so Mistral v0.3's SentencePiece
    # tokenizer (the same kind: SentencePiece BPE with byte fallback, <s> </s> <unk>) stands in.
    "phi35-mini-tools": Base("phi3_5_mini_instruct", "mistral_7b_instruct_v0_3", "LlamaForCausalLM", True,
                             "llamafied as Unsloth ships it; Mistral v0.3 tokenizer stands in"),
    "llama2-13b-tools": Base("llama2_13b_chat", "mistral_7b_instruct_v0_3", "LlamaForCausalLM", True,
                             "Mistral v0.3 tokenizer stands in"),
}

SHRINK = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
DROP = ("quantization_config", "auto_map", "_name_or_path", "torch_dtype", "transformers_version")


def miniature_config(cfg: dict, architecture: str, vocab: int, full_size: bool = False) -> dict:
    """The real config with its dimensions shrunk (unless full_size): same heads ratio (GQA stays
    GQA), same rope settings, same special token ids."""
    cfg = {k: v for k, v in cfg.items() if k not in DROP}
    cfg["architectures"] = [architecture]
    cfg["model_type"] = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
                         "MistralForCausalLM": "mistral"}[architecture]
    cfg["vocab_size"] = max(cfg["vocab_size"], vocab)
    if not full_size:
        heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
        small = dict(SHRINK)
        rope = cfg.get("rope_scaling") or {}
        if "short_factor" in rope:  # longrope: one factor per rotary pair, so the head keeps its width
            head_dim = 2 * len(rope["short_factor"])
            small["num_attention_heads"] = 2
            small["hidden_size"] = 2 * head_dim
        small["num_key_value_heads"] = small["num_attention_heads"] if kv == heads else small["num_attention_heads"] // 2
        small["head_dim"] = small["hidden_size"] // small["num_attention_heads"]
        cfg.update(small)
        cfg["initializer_range"] = 0.2  # random weights with some opinion, so greedy replies are not all ties
        if cfg.get("max_window_layers"):
            cfg["max_window_layers"] = 2
    return cfg


def build(recipe_name: str, fixtures: Path, out: Path, *, full_size: bool = False, dtype: str = "float32",
          seed: int = 0) -> Path:
    """Write the miniature checkpoint (weights, config, generation config, tokenizer) to `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base = BASES[recipe_name]
    src = fixtures / "models" / base.model
    tok_dir = fixtures / "tokenizers" / base.tokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = miniature_config(json.loads((src / "config.json").read_text()), base.architecture, len(tok), full_size)
    config = AutoConfig.for_model(**cfg)
    torch.manual_seed(seed)
    with torch.device("meta" if full_size else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    if full_size:  # the GPU rehearsal only needs the shapes saved: weights are made on the GPU
        config.save_pretrained(out)
    else:
        model.save_pretrained(out, safe_serialization=True)
    # The real generation config, byte for byte (sampling defaults and all): what a download brings.
    shutil.copy2(src / "generation_config.json", out / "generation_config.json")
    GenerationConfig.from_pretrained(out)  # loads as a user's would
    for f in tok_dir.iterdir():
        shutil.copy2(f, out / f.name)
    return out


def cache_repo(hf_home: Path, repo_id: str, folder: Path) -> Path:
    """Place `folder` in a Hugging Face hub cache as the snapshot of `repo_id` (what a download leaves)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    if snap.exists():
        shutil.rmtree(snap)
    shutil.copytree(folder, snap)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snap


def vllm_llama(tok_dir: Path):
    """A random 2-layer Llama (hidden 128, two heads of 64, the head size vLLM's CPU attention takes) on the
    tokenizer in `tok_dir`: (model, tokenizer), for tests that serve a model with the real vLLM."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg), tok
