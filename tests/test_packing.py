"""Shared-prefix packing gives the unpacked batch's loss and LoRA gradients."""

from __future__ import annotations

import pytest
import torch

from pipeline.lib.packing import IGNORE, PackCollator, PrefixGroupedSampler, common_prefix
from pipeline.lib.trainer import trained_positions_loss


def conversations(tok, n=4, prefix_words=40):
    """n token sequences sharing a long untrained prefix, each with its own trained answer."""
    prefix = tok("System: " + " ".join(f"tool{i}(arg: str)" for i in range(prefix_words)) + "\n",
                 add_special_tokens=False)["input_ids"]
    rows = []
    for k in range(n):
        user = tok(f"User: question number {k} " + "and more " * k, add_special_tokens=False)["input_ids"]
        answer = tok(f"Assistant: answer {k * 7} done<|im_end|>", add_special_tokens=False)["input_ids"]
        ids = prefix + user + answer
        labels = [IGNORE] * (len(prefix) + len(user)) + answer
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def lora_model(path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                             lora_dropout=0.0, init_lora_weights=False))
    return model


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = trained_positions_loss(model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def check_equal(model, rows, pad_id, tol):
    padded = PackCollator(pad_id, mode="none")(rows)
    stats = {}
    packed = PackCollator(pad_id, mode="shared_prefix", stats=stats)(rows)
    assert packed["input_ids"].shape[0] == 1, "one packed row"
    assert packed["input_ids"].numel() < padded["input_ids"].numel() * 0.6, "the prefix is computed once"
    assert stats["pad_tokens"] == 0
    l1, g1 = loss_and_grads(model, padded)
    l2, g2 = loss_and_grads(model, packed)
    assert abs(l1 - l2) < tol * max(1.0, abs(l1))
    worst = max((g1[n] - g2[n]).abs().max().item() for n in g1)
    assert worst < tol, f"max gradient difference {worst}"


def test_packed_equals_unpacked_tiny(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    check_equal(lora_model(tiny_model_dir), conversations(tok), tok.pad_token_id, 1e-4)


@pytest.mark.slow
def test_packed_equals_unpacked_smollm2(smol_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    check_equal(lora_model(smol_dir), conversations(tok, n=3, prefix_words=20), tok.pad_token_id, 1e-3)


def test_no_shared_prefix_falls_back_to_padded_rows(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = conversations(tok, n=3, prefix_words=0)
    rows[1]["input_ids"] = [tok.convert_tokens_to_ids("<|im_start|>")] + rows[1]["input_ids"]
    rows[1]["labels"] = [IGNORE] + rows[1]["labels"]
    assert common_prefix([r["input_ids"] for r in rows], [r["labels"] for r in rows]) < 16
    packed = PackCollator(tok.pad_token_id)(rows)
    assert tuple(packed["input_ids"].shape) == (3, max(len(r["input_ids"]) for r in rows))  # padded rows
    model = lora_model(tiny_model_dir)
    l1, _ = loss_and_grads(model, PackCollator(tok.pad_token_id, mode="none")(rows))
    l2, _ = loss_and_grads(model, packed)
    assert abs(l1 - l2) < 1e-4


def test_block_mask_isolates_continuations():
    rows = [{"input_ids": list(range(1, 21)) + [100 + k, 200 + k], "labels": [IGNORE] * 20 + [100 + k, 200 + k]}
            for k in range(2)]
    b = PackCollator(0)(rows)
    mask = b["attention_mask"][0, 0]
    cut = 19  # common prefix 20 tokens, cut one short
    first, second = slice(cut, cut + 3), slice(cut + 3, cut + 6)
    assert mask[first, :cut].all() and mask[second, :cut].all()
    assert not mask[second, first].any() and not mask[first, second].any()
    assert b["position_ids"][0, first].tolist() == b["position_ids"][0, second].tolist() == [19, 20, 21]


def test_prefix_grouped_sampler_batches_one_prefix_together_and_pads_little():
    # 3 groups of 9, 5 and 1 conversations (lengths vary) plus 7 with a list of their own each
    groups = ["a"] * 9 + ["b"] * 5 + ["c"] + [f"own{i}" for i in range(7)]
    lengths = [100 + 37 * i % 91 for i in range(len(groups))]
    s = PrefixGroupedSampler(groups, lengths, batch=4, seed=0)
    order = list(s)
    assert sorted(order) == list(range(len(groups))) and len(s) == len(groups)
    batches = [order[k:k + 4] for k in range(0, len(order), 4)]
    one_group = [b for b in batches if len({groups[i] for i in b}) == 1]
    assert len(one_group) == 9 // 4 + 5 // 4  # every full batch a group can fill
    assert batches == s.batches() and all(len(b) == 4 for b in batches[:-1]) and len(batches[-1]) == len(groups) % 4
    # the leftovers go in batches of similar length: less padding than in the order they came
    mixed = [b for b in batches if len({groups[i] for i in b}) > 1 and len(b) == 4]
    rest = sorted((i for b in mixed for i in b), key=lambda i: i)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in mixed)
    naive = sum(max(lengths[i] for i in rest[k:k + 4]) - min(lengths[i] for i in rest[k:k + 4])
                for k in range(0, len(rest) - 3, 4))
    assert spread <= naive
    # the same order for the same epoch (a resumed run), another for the next
    again = PrefixGroupedSampler(groups, lengths, batch=4, seed=0)
    assert list(again) == order
    s.set_epoch(1)
    assert list(s) != order and sorted(s) == list(range(len(groups)))
