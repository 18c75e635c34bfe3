"""The count stage counts exactly what apply_chat_template produces, for every example."""

from __future__ import annotations

import json

import pytest

from pipeline.lib import artifacts
from pipeline.lib.template import adapt
from pipeline.stages import s1_validate as validate
from pipeline.stages import s2_count as count


def run_count(runs_dir, run, extra):
    argv = ["--recipe", "smollm2-135m-tools", "--run", run, "data.max_train=40", *extra]
    validate.main(argv)
    count.main(argv)
    return runs_dir / run


def direct_ids(tokenizer, template, run_dir):
    """Token ids of every training example by the plain per-example apply_chat_template(tokenize=True)."""
    records = artifacts.load_split(run_dir, "train")
    fmt = json.loads((run_dir / "count" / "report.json").read_text())["template_format"]
    out = []
    for r in records:
        ids = tokenizer.apply_chat_template(adapt(r["messages"], fmt), tools=r["tools"], tokenize=True,
                                            chat_template=template)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


def direct_counts(tokenizer, template, run_dir):
    return [len(x) for x in direct_ids(tokenizer, template, run_dir)]


def stored_ids(run_dir):
    return [json.loads(x)["input_ids"] for x in (run_dir / "count" / "train.tokens.jsonl").read_text().splitlines()]


def stored_counts(run_dir):
    return [len(x) for x in stored_ids(run_dir)]


def test_default_recipe_counts_equal_apply_chat_template(runs_dir, smol_dir):
    from transformers import AutoTokenizer

    from pipeline.lib.template import TEMPLATES

    run = run_count(runs_dir, "c-default", [])
    tok = AutoTokenizer.from_pretrained(smol_dir)
    # Same ids, not just the same counts: the shared-prefix batched tokenization and tooltune's
    # unsandboxed render of its own template change nothing.
    assert stored_ids(run) == direct_ids(tok, (TEMPLATES / "hermes.jinja").read_text(), run)
    report = json.loads((run / "count" / "report.json").read_text())
    assert report["total_tokens"] == sum(stored_counts(run))
    assert set(report["len_div_4"]) >= {"prose", "json", "all"}
    assert 0 < report["trained_share"] < 0.5 and report["tool_schema_share"] > 0.3
    assert (run / "count" / "report.md").read_text().count("len/4") >= 2


@pytest.mark.parametrize("name,recipe_args", [
    ("llama3_1_instruct", ["chat_template=null", "max_seq_length=4096"]),
    ("qwen2_5_instruct", ["chat_template=null", "max_seq_length=4096"]),
    ("mistral_7b_instruct_v0_3", ["chat_template=null", "max_seq_length=4096"]),
])
def test_fixture_tokenizers_count_exactly(runs_dir, tokenizer_dir, name, recipe_args):
    from transformers import AutoTokenizer

    d = tokenizer_dir(name)
    run = run_count(runs_dir, f"c-{name}", [f"tokenizer={d}", *recipe_args])
    tok = AutoTokenizer.from_pretrained(d)
    assert stored_ids(run) == direct_ids(tok, tok.chat_template, run)


def test_the_builtin_tokenizer_is_plain_byte_level_bpe(smol_dir, tiny_model_dir):
    """transformers builds SmolLM2's tokenizer from its GGUF with SentencePiece parts mixed in (byte_fallback,
    a ByteFallback/Fuse decoder), which llama.cpp's converter reads as a SentencePiece vocabulary: its GGUF then
    fails every chat request. The built-in folder, and what is saved from it, is plain GPT-2 byte-level BPE."""
    from gguf.vocab import LlamaHfVocab
    from transformers import AutoTokenizer

    for folder in (smol_dir, tiny_model_dir):
        spec = json.loads((folder / "tokenizer.json").read_text())
        assert spec["model"]["type"] == "BPE" and not spec["model"]["byte_fallback"], folder
        assert spec["decoder"]["type"] == "ByteLevel" and spec["normalizer"] is None
        with pytest.raises(FileNotFoundError, match="Llama BPE"):  # the converter's test: not a llama vocab, so gpt2
            LlamaHfVocab(folder)
    tok = AutoTokenizer.from_pretrained(smol_dir)
    for text in ["Zürich 東京 ✓ naïve", "  two  spaces\n\n\tand tabs", '<|im_start|>user\n{"a": [1, 2.5]}<|im_end|>', "🙂 ok"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok("<|im_end|>", add_special_tokens=False)["input_ids"] == [2]
