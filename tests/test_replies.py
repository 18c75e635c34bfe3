"""Replies of a model that did not change are reused, and only then: the key holds the weights, the eval turns,
the template, the decoding and the decode path."""

from __future__ import annotations

import shutil

import pytest

from pipeline.lib import inference
from pipeline.lib.conversations import BUNDLED, bundled_tools, read_records
from pipeline.lib.recipe import load as load_recipe
from pipeline.lib.scoring import eval_items
from pipeline.lib.template import Chat
from pipeline.stages import s6_evaluate as evaluate


@pytest.fixture
def setup(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    monkeypatch.setattr(inference, "REPLIES", tmp_path / "replies")
    monkeypatch.setattr(inference, "DIGESTS", tmp_path / "digests.json")
    recipe = load_recipe("smollm2-135m-tools", [f"model={tiny_model_dir}", "cpu_bf16=false", "eval.batch_size=3"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat = Chat.for_recipe(recipe, tok)
    items = eval_items(read_records(BUNDLED / "eval.jsonl", bundled_tools())[:4], chat.fmt, 6)
    loads = []
    real = evaluate.load_model

    def counting(path, recipe, name):
        loads.append(path)
        return real(path, recipe, name)

    monkeypatch.setattr(evaluate, "load_model", counting)
    return recipe, tok, chat, items, loads


def replies(recipe, tok, chat, items, path, budget=6, chat_for_prompts=None):
    c = chat_for_prompts or chat
    prompts = [c.prompt(it["messages"], it["tools"]) for it in items]
    out, _, info, timing = evaluate.hf_replies(recipe, tok, chat, "base", str(path), "base", prompts, budget, [])
    return out, info, timing


def test_replies_reused_only_when_nothing_they_depend_on_changed(setup, tiny_model_dir, tmp_path, monkeypatch):
    recipe, tok, chat, items, loads = setup
    first, info, timing = replies(recipe, tok, chat, items, tiny_model_dir)
    assert len(loads) == 1 and "replies_reused" not in info and timing["seconds"] > 0

    again, info, timing = replies(recipe, tok, chat, items, tiny_model_dir)  # nothing changed
    assert again == first and len(loads) == 1, "reused without loading the model"
    assert info["replies_reused"] == {"eval": info["replies_reused"]["eval"]} and timing == {"seconds": 0.0, "reused": True}

    copy = tmp_path / "same-weights"  # the same bytes elsewhere: the digest is of the contents
    shutil.copytree(tiny_model_dir, copy)
    assert replies(recipe, tok, chat, items, copy)[0] == first and len(loads) == 1

    replies(recipe, tok, chat, items[1:], tiny_model_dir)  # the eval data changed
    assert len(loads) == 2
    other = Chat(tok, chat.template.replace("# Tools", "# Functions"), chat.fmt)
    assert other.template != chat.template
    replies(recipe, tok, chat, items, tiny_model_dir, chat_for_prompts=other)  # the template changed
    assert len(loads) == 3
    replies(recipe, tok, chat, items, tiny_model_dir, budget=7)  # the decoding changed
    assert len(loads) == 4

    import torch
    from safetensors.torch import load_file, save_file

    changed = tmp_path / "changed-weights"  # one weight changed in the base
    shutil.copytree(tiny_model_dir, changed)
    state = load_file(changed / "model.safetensors")
    name = next(iter(state))
    state[name] = state[name] + torch.full_like(state[name], 1e-3)
    save_file(state, changed / "model.safetensors", metadata={"format": "pt"})
    replies(recipe, tok, chat, items, changed)
    assert len(loads) == 5

    real = inference.decode_path  # a machine that decodes in another dtype or with other vector instructions
    monkeypatch.setattr(inference, "decode_path", lambda r: {**real(r), "cpu_capability": "AVX512_BF16"})
    replies(recipe, tok, chat, items, tiny_model_dir)
    assert len(loads) == 6
    monkeypatch.setattr(inference, "decode_path", real)
    assert replies(recipe, tok, chat, items, tiny_model_dir)[0] == first and len(loads) == 6  # back: reused


def test_a_damaged_cache_entry_is_regenerated(setup, tiny_model_dir):
    recipe, tok, chat, items, loads = setup
    first, _, _ = replies(recipe, tok, chat, items, tiny_model_dir)
    for f in inference.REPLIES.glob("*.json"):
        f.write_text(f.read_text()[:40])  # cut off
    again, info, _ = replies(recipe, tok, chat, items, tiny_model_dir)
    assert again == first and len(loads) == 2 and "replies_reused" not in info
