"""One template per run: loss masks cover exactly the assistant turns; parsers follow vLLM's rules."""

from __future__ import annotations

import json

import pytest

from pipeline.lib.common import StageError
from pipeline.lib.mask import audit_mask, tokenize_with_mask
from pipeline.lib.parse import parse
from pipeline.lib.template import TEMPLATES, Chat, detect_format

TOOLS = [
    {"type": "function", "function": {"name": "check_order_status", "description": "Look up an order.",
                                      "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                     "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "submit_refund", "description": "Refund an order.",
                                      "parameters": {"type": "object", "properties": {
                                          "order_id": {"type": "string"}, "reason": {"type": "string", "enum": ["damaged", "late"]}},
                                          "required": ["order_id", "reason"]}}},
]
CALL1 = {"id": "call_1", "type": "function", "function": {"name": "check_order_status", "arguments": {"order_id": "ORD-123456"}}}
CALL2 = {"id": "call_2", "type": "function", "function": {"name": "submit_refund", "arguments": {"order_id": "ORD-123456", "reason": "late"}}}
MESSAGES = [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "Where is ORD-123456? It is very late."},
    {"role": "assistant", "content": None, "tool_calls": [CALL1]},
    {"role": "tool", "tool_call_id": "call_1", "name": "check_order_status", "content": "{\"status\": \"delayed by ten days\"}"},
    {"role": "assistant", "content": None, "tool_calls": [CALL2]},
    {"role": "tool", "tool_call_id": "call_2", "name": "submit_refund", "content": "{\"refund_id\": \"RF-99812\", \"ok\": true}"},
    {"role": "assistant", "content": "Your refund RF-99812 is on its way."},
]
# What the model must learn to write, per format (decoded trained tokens, concatenated).
EXPECTED = {
    "llama3_1_instruct": '{"name": "check_order_status", "parameters": {"order_id": "ORD-123456"}}<|eot_id|>'
                         '{"name": "submit_refund", "parameters": {"order_id": "ORD-123456", "reason": "late"}}<|eot_id|>'
                         'Your refund RF-99812 is on its way.<|eot_id|>',
    "qwen2_5_instruct": '<tool_call>\n{"name": "check_order_status", "arguments": {"order_id": "ORD-123456"}}\n</tool_call><|im_end|>'
                        '<tool_call>\n{"name": "submit_refund", "arguments": {"order_id": "ORD-123456", "reason": "late"}}\n</tool_call><|im_end|>'
                        'Your refund RF-99812 is on its way.<|im_end|>',
    "hermes": '<tool_call>{"name": "check_order_status", "arguments": {"order_id": "ORD-123456"}}</tool_call><|im_end|>'
              '<tool_call>{"name": "submit_refund", "arguments": {"order_id": "ORD-123456", "reason": "late"}}</tool_call><|im_end|>'
              'Your refund RF-99812 is on its way.<|im_end|>',
}


def chat_for(directory, template_file=None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    template = template_file.read_text() if template_file else tok.chat_template
    return Chat(tok, template, detect_format(template))


@pytest.fixture(params=["llama3_1_instruct", "qwen2_5_instruct", "mistral_7b_instruct_v0_3", "hermes"])
def chat(request, tokenizer_dir, smol_dir):
    if request.param == "hermes":
        return request.param, chat_for(smol_dir, TEMPLATES / "hermes.jinja")
    return request.param, chat_for(tokenizer_dir(request.param))


def test_mask_covers_exactly_the_assistant_turns(chat):
    name, c = chat
    full, spans, ids, mask = tokenize_with_mask(c, MESSAGES, TOOLS)
    audit_mask(c, MESSAGES, TOOLS, full, spans, ids, mask, name)
    trained = c.tokenizer.decode([t for t, m in zip(ids, mask) if m])
    if name == "mistral_7b_instruct_v0_3":
        # Mistral writes calls as [TOOL_CALLS] [{..., "id": <9 chars>}] and ends turns with </s>.
        assert trained.count("[TOOL_CALLS]") == 2 and trained.count("</s>") == 3
        assert '"name": "submit_refund", "arguments": {"order_id": "ORD-123456", "reason": "late"}' in trained
        assert trained.rstrip().endswith("Your refund RF-99812 is on its way.</s>")
    else:
        assert trained == EXPECTED[name]
    for m in MESSAGES:
        if m["role"] in ("user", "tool", "system"):
            assert m["content"] not in trained
    # Counting is exact: the same ids as apply_chat_template(tokenize=True).
    from pipeline.lib.template import adapt

    ref = c.tokenizer.apply_chat_template(adapt(MESSAGES, c.fmt), tools=TOOLS, tokenize=True, chat_template=c.template)
    ref = ref["input_ids"] if hasattr(ref, "keys") else ref
    assert ids == list(ref)


def test_audit_fails_a_bad_mask(chat):
    name, c = chat
    full, spans, ids, mask = tokenize_with_mask(c, MESSAGES, TOOLS)
    # 1) train the tool result tokens too
    tool_text = "delayed by ten days"
    start = full.find(tool_text)
    enc = c.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    bad = [1 if (s < start + len(tool_text) and e > start) else m for (s, e), m in zip(enc["offset_mapping"], mask)]
    with pytest.raises(StageError, match="would be trained|outside every assistant turn"):
        audit_mask(c, MESSAGES, TOOLS, full, spans, ids, bad, name)
    # 2) forget the end-of-turn token of the first call
    last = max(t for t, m in enumerate(mask) if m and enc["offset_mapping"][t][1] <= spans[0][1])
    bad = list(mask)
    bad[last] = 0
    with pytest.raises(StageError, match="not fully trained|end-of-turn"):
        audit_mask(c, MESSAGES, TOOLS, full, spans, ids, bad, name)


def test_a_reply_that_repeats_the_user_is_trained_where_the_reply_is(chat):
    """"Yes" after "Yes": both end with the same end-of-turn token, and the mask must not land on the user's."""
    name, c = chat
    msgs = [MESSAGES[0], {"role": "user", "content": "Yes"}, {"role": "assistant", "content": "Yes"}]
    full, spans, ids, mask = tokenize_with_mask(c, msgs, TOOLS)
    audit_mask(c, msgs, TOOLS, full, spans, ids, mask, name)
    assert len(spans) == 1 and spans[0][0] > full.find("Yes")
    assert c.tokenizer.decode([t for t, m in zip(ids, mask) if m]).strip().startswith("Yes")


def test_llama_parallel_calls_become_consecutive_turns(tokenizer_dir):
    c = chat_for(tokenizer_dir("llama3_1_instruct"))
    msgs = [MESSAGES[0], MESSAGES[1], {"role": "assistant", "content": None, "tool_calls": [CALL1, CALL2]}]
    full, spans, ids, mask = tokenize_with_mask(c, msgs, TOOLS)
    assert len(spans) == 2


# --- parsers -----------------------------------------------------------------------------

CASES = {
    "hermes": {
        "single": ('<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>', [("a", {"x": 1})], None),
        "parallel": ('<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>{"name": "b", "arguments": {}}</tool_call>',
                     [("a", {"x": 1}), ("b", {})], None),
        "text": ("Sorry, I can only help with orders.", [], None),
        "malformed": ('<tool_call>{"name": "a", "arguments": {"x": </tool_call>', [], "malformed"),
    },
    "llama3_json": {
        "single": ('{"name": "a", "parameters": {"x": 1}}', [("a", {"x": 1})], None),
        "parallel": ('{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {"y": "z"}}',
                     [("a", {"x": 1}), ("b", {"y": "z"})], None),
        "text": ("Sorry, I can only help with orders.", [], None),
        "malformed": ('{"name": "a", "parameters": {"x": 1}', [], "malformed"),
    },
    "mistral": {
        "single": ('[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}, "id": "abcdefghi"}]', [("a", {"x": 1})], None),
        "parallel": ('[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{\\"y\\": 2}"}]',
                     [("a", {"x": 1}), ("b", {"y": 2})], None),
        "text": ("Sorry, I can only help with orders.", [], None),
        "malformed": ("[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": ", [], "malformed"),
    },
}


@pytest.mark.parametrize("fmt,case", [(f, c) for f in CASES for c in CASES[f]])
def test_parsers(fmt, case):
    text, calls, error = CASES[fmt][case]
    p = parse(text, fmt)
    assert [(c["name"], c["arguments"]) for c in p.calls] == calls
    assert (p.error is not None) == (error is not None)
    if case == "text":
        assert p.text == text


def test_encode_many_equals_the_exact_per_example_way(chat):
    """The count stage's batched path (spans rendered without tools, prefix tokenized once per group,
    forked render workers) gives the ids and mask of the slow exact way: every render with the tools,
    apply_chat_template, the whole text tokenized on its own."""
    from pipeline.lib.encode import encode_many
    from pipeline.lib.mask import _spans, mask_from_offsets
    from pipeline.lib.template import adapt

    name, c = chat
    other_tools = TOOLS[:1]
    variants = [
        MESSAGES,
        MESSAGES[:3],
        [MESSAGES[0], {"role": "user", "content": "Can you write me a poem?"},
         {"role": "assistant", "content": "I can only help with orders and refunds."}],
        [{"role": "system", "content": "A different system prompt."}, *MESSAGES[1:5]],
        MESSAGES[1:3],
        # Non-ASCII text: token offsets summed from bytes must land on characters, not bytes.
        [MESSAGES[0], {"role": "user", "content": "Où est ma commande ORD-123456 ? 注文はどこですか 🚚"},
         {"role": "assistant", "content": "Elle arrive demain — 明日届きます 📦."}],
    ]
    records = []
    for i in range(29):
        msgs = json.loads(json.dumps(variants[i % len(variants)]))
        if msgs[-1].get("tool_calls"):
            msgs[-1]["tool_calls"][0]["function"]["arguments"]["order_id"] = f"ORD-{100000 + i}"
        records.append({"id": f"r{i}", "messages": msgs, "tools": other_tools if i % 7 == 3 else TOOLS})
    expected = []
    for r in records:
        msgs = adapt(r["messages"], c.fmt)
        full = c.tokenizer.apply_chat_template(msgs, tools=r["tools"], tokenize=False, chat_template=c.template)
        spans = _spans(c, msgs, r["tools"], full)
        enc = c.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        expected.append((full, spans, list(enc["input_ids"]), mask_from_offsets(enc["offset_mapping"], spans)))
    for workers in (1, 2):
        got = [(full, spans, ids.tolist(), mask.tolist()) for _, full, spans, ids, mask in
               encode_many(c, records, chunk=5, workers=workers)]
        assert got == expected, (name, workers)


BYTE_TEXTS = ["", "plain ASCII, 12345 and {\"json\": [1, 2]}\n", "café naïve e\u0301 — “quotes”", "注文はどこですか？",
              "emoji 🚚📦 and 👩‍👩‍👧 joined", "tabs\t\tand\r\n\n\n  spaces   end ", "Привет, мир", "🚚"]


def test_byte_level_offsets_equal_the_tokenizers_own(chat, monkeypatch):
    """For byte-level BPE tokenizers the count stage sums token offsets from the bytes each token stands
    for instead of asking the tokenizer: they must be the tokenizer's own offsets, on any text (a token
    may hold part of a character). Tokenizers where that does not hold are recognized and left alone."""
    import numpy as np

    import pipeline.lib.encode as chat_mod

    name, c = chat
    table, ascii_only = c.token_bytes
    assert (table is None) == (name == "mistral_7b_instruct_v0_3"), name  # SentencePiece-style: Metaspace
    assert ascii_only == (name == "qwen2_5_instruct"), name  # Qwen normalizes to NFC: exact on ASCII only
    if table is None:
        return
    bt = c.tokenizer.backend_tokenizer
    texts = BYTE_TEXTS + [t + c.eot + t for t in BYTE_TEXTS]
    for text in texts:
        ids, bounds = chat_mod._flat([bt.encode(text, add_special_tokens=False).ids])
        got = chat_mod.summed_offsets(table, ids, bounds, [text])
        if got is None:  # refused: only where normalization may change non-ASCII text (never used there)
            assert ascii_only and not text.isascii(), (name, text)
            continue
        assert np.array_equal(got, np.asarray(bt.encode(text, add_special_tokens=False).offsets).reshape(-1, 2)), (name, text)
    # Many texts end to end, as the count stage asks: each one's offsets are its own.
    if not ascii_only:
        ids, bounds = chat_mod._flat([e.ids for e in bt.encode_batch(texts, add_special_tokens=False)])
        got = chat_mod.summed_offsets(table, ids, bounds, texts)
        for k, text in enumerate(texts):
            want = np.asarray(bt.encode(text, add_special_tokens=False).offsets).reshape(-1, 2)
            assert np.array_equal(got[bounds[k]:bounds[k + 1]], want), (name, text)
    # The batched way takes this path on the count stage's texts (ASCII here) and gives the same offsets.
    summed, real = [], chat_mod.summed_offsets
    monkeypatch.setattr(chat_mod, "summed_offsets", lambda *a: summed.append(real(*a)) or summed[-1])
    texts = [c.render(MESSAGES, TOOLS), c.render(MESSAGES[:3], TOOLS), BYTE_TEXTS[1]]
    ids, offs, bounds = chat_mod._encode_tails(c, texts)
    for k, text in enumerate(texts):
        enc = bt.encode(text, add_special_tokens=False)
        assert ids[bounds[k]:bounds[k + 1]].tolist() == enc.ids, name
        assert np.array_equal(offs[bounds[k]:bounds[k + 1]], np.asarray(enc.offsets).reshape(-1, 2)), name
    assert len(summed) == 1 and summed[0] is not None, name
    # ids that do not add up to the text are refused, not trusted
    ids, bounds = chat_mod._flat([bt.encode("hello world", add_special_tokens=False).ids])
    assert chat_mod.summed_offsets(table, ids, bounds, ["hello world!"]) is None


# --- the Hermes template's Python twin -------------------------------------------------------------

def _hermes_chat(smol_dir):
    return chat_for(smol_dir, TEMPLATES / "hermes.jinja")


def test_hermes_renderer_equals_the_template_on_the_bundled_data(smol_dir):
    """Text and assistant spans, conversation by conversation, on every bundled conversation."""
    from pipeline.lib.conversations import BUNDLED, bundled_tools, read_records
    from pipeline.lib.mask import assistant_spans

    c = _hermes_chat(smol_dir)
    fast = c.fast_spans()
    assert fast is not None
    tools = bundled_tools()
    recs = read_records(BUNDLED / "train.jsonl", tools) + read_records(BUNDLED / "eval.jsonl", tools)
    assert len(recs) > 3000
    for r in recs:
        assert fast(r["messages"], r["tools"]) == assistant_spans(c, r["messages"], r["tools"]), r["id"]


def test_hermes_renderer_equals_the_template_on_generated_conversations(smol_dir):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from pipeline.lib.mask import assistant_spans

    c = _hermes_chat(smol_dir)
    fast = c.fast_spans()
    text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="<>|"), min_size=1, max_size=30)
    prop = st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "boolean"])}),
                     st.fixed_dictionaries({"type": st.just("string"), "enum": st.lists(st.sampled_from(["a", "b", 3, True]), min_size=1, max_size=3)}),
                     st.fixed_dictionaries({"type": st.just(["string", "null"])}), st.just({}))
    tool = st.builds(
        lambda name, props, req, desc, wrap: (lambda f: {"type": "function", "function": f} if wrap else f)(
            {"name": name, **({"description": desc} if desc is not None else {}),
             "parameters": {"type": "object", "properties": props, "required": [k for k in props if req]}}),
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), prop, max_size=3),
        st.booleans(), st.one_of(st.none(), st.just(""), text), st.booleans())
    call = st.builds(lambda name, args, as_text: {"type": "function", "function": {
        "name": name, "arguments": json.dumps(args) if as_text else args}},
        st.from_regex(r"[a-z_]{1,12}", fullmatch=True), st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True),
                                                                        st.one_of(st.integers(), text, st.booleans()), max_size=3),
        st.booleans())
    message = st.one_of(
        st.builds(lambda t: {"role": "user", "content": t}, text),
        st.builds(lambda t: {"role": "tool", "tool_call_id": "c", "content": t}, text),
        st.builds(lambda t: {"role": "assistant", "content": t}, text),
        st.builds(lambda t, calls: {"role": "assistant", "content": t, "tool_calls": calls},
                  st.one_of(st.none(), st.just(""), text), st.lists(call, min_size=1, max_size=3)))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(system=st.one_of(st.none(), text), body=st.lists(message, min_size=1, max_size=7),
           tools=st.one_of(st.none(), st.lists(tool, min_size=1, max_size=3)))
    def check(system, body, tools):
        # As validated: a user turn opens the conversation (the validator rejects any other start).
        msgs = ([{"role": "system", "content": system}] if system is not None else []) + [MESSAGES[1]] + body
        assert fast(msgs, tools) == assistant_spans(c, msgs, tools)

    check()


def test_encode_many_falls_back_to_the_template_when_the_twin_differs(smol_dir, monkeypatch):
    from pipeline.lib.encode import encode_many
    from pipeline.lib.mask import tokenize_with_mask
    from pipeline.lib.template import HermesRenderer

    c = _hermes_chat(smol_dir)
    records = [{"id": f"r{i}", "messages": MESSAGES, "tools": TOOLS} for i in range(4)]
    expected = [tokenize_with_mask(c, MESSAGES, TOOLS) for _ in records]
    real = HermesRenderer.__call__
    monkeypatch.setattr(HermesRenderer, "__call__", lambda self, m, t: (real(self, m, t)[0], [(0, 5)]))
    got = [(full, spans, ids.tolist(), mask.tolist()) for _, full, spans, ids, mask in encode_many(c, records, workers=1)]
    assert got == [(f, s, list(i), m) for f, s, i, m in expected]
