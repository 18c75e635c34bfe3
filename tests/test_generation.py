"""tooltune's greedy decoding (prompts prefilled through their trie, its own decode loop) equals plain generation."""

from pipeline.lib.generation import forced_greedy, greedy, prompt_ids


def conversation_prompts():
    tools_a = "<|im_start|>system\n" + "You can call these tools: " + ", ".join(f"tool_{i}" for i in range(30)) + "<|im_end|>\n"
    tools_b = "<|im_start|>system\n" + "Tools: " + ", ".join(f"lookup_{i}" for i in range(12)) + "<|im_end|>\n"
    turn = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"
    first = tools_a + turn.format(q="where is my order ORD-123456?")
    return [tools_a + turn.format(q="hi"), first,
            first + "It shipped yesterday.<|im_end|>\n" + turn.format(q="and the refund?"),  # a later turn: extends `first`
            tools_b + turn.format(q="refund please, it arrived broken"), tools_b + turn.format(q="ok"), "x"]


def plain(model, tok, prompt, eot, n):
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    ref = model.generate(input_ids=ids, max_new_tokens=n, do_sample=False, eos_token_id=eot,
                         pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    return ref[: ref.index(eot) + 1] if eot in ref else ref


def test_trie_generation_equals_plain(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = conversation_prompts()
    # An end-of-turn token the model really produces, at different steps in different rows, so that rows finish
    # apart and the loop drops them from its batch.
    free = greedy(model, tok, prompts, -1, 12, batch_size=4, trie=False, share_prefix=False)
    counts = {}
    for row in free:
        for t in set(row[1:]):
            counts[t] = counts.get(t, 0) + 1
    eot = max(counts, key=counts.get)
    gaps = []
    trie = greedy(model, tok, prompts, eot, 12, batch_size=4, margins=gaps)
    batched = greedy(model, tok, prompts, eot, 12, batch_size=4, trie=False)
    assert trie == batched
    for prompt, got in zip(prompts, trie):  # ... and transformers' own generate, one prompt at a time
        assert got == plain(model, tok, prompt, eot, 12)
    lengths = {len(x) for x in trie}
    assert len(lengths) > 1 and any(x[-1] == eot for x in trie)  # rows did finish apart
    assert len(gaps) == len(prompts) and all(len(g) == len(s) for g, s in zip(gaps, trie))


def test_forced_greedy_reads_the_reference(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompts = conversation_prompts()[:5]
    ids = prompt_ids(tok, prompts)
    mine = greedy(model, tok, prompts, -1, 10, batch_size=2)
    assert forced_greedy(model, ids, mine) == mine  # the model's own replies: every step agrees
    wrong = [row[:3] + [(row[3] + 1) % tok.vocab_size] + row[4:] for row in mine]
    # a reference that departs at step 3: the model's own token there, after the reference's first three
    assert forced_greedy(model, ids, wrong) == [row[:4] for row in mine]
