"""Generation with the shared prompt prefix computed once equals plain batched generation."""

from pipeline.lib.generation import greedy


def test_shared_prefix_generation_equals_plain(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    system = "<|im_start|>system\n" + "You can call these tools: " + ", ".join(f"tool_{i}" for i in range(30)) + "<|im_end|>\n"
    prompts = [system + f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
               for q in ("hi", "where is my order ORD-123456?", "refund please, it arrived broken", "ok")]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    gaps = []
    shared = greedy(model, tok, prompts, eot, 12, batch_size=3, margins=gaps)
    plain = greedy(model, tok, prompts, eot, 12, batch_size=3, share_prefix=False)
    assert shared == plain
    # ... and equals transformers' own generate, one prompt at a time (no padding, no cache tricks).
    for prompt, got in zip(prompts, shared):
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ref = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, eos_token_id=eot,
                             pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
        assert got == ref[: ref.index(eot) + 1] if eot in ref else got == ref
    assert len(gaps) == 4 and all(len(g) == len(s) for g, s in zip(gaps, shared))
