"""The data contract: every bad line is found, explained, kept; good lines all pass."""

from __future__ import annotations

import json

import pytest

from pipeline.lib import conversations
from pipeline.stages import s1_validate as validate

TOOLS = [
    {"type": "function", "function": {"name": "check_order_status", "description": "Look up an order.",
                                      "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "pattern": "^ORD-\\d{6}$"}},
                                                     "required": ["order_id"], "additionalProperties": False}}},
    {"type": "function", "function": {"name": "submit_refund", "description": "Refund.",
                                      "parameters": {"type": "object", "properties": {
                                          "order_id": {"type": "string", "pattern": "^ORD-\\d{6}$"},
                                          "reason": {"type": "string", "enum": ["damaged", "late"]},
                                          "amount": {"type": "number", "minimum": 0.01, "maximum": 5000}},
                                          "required": ["order_id", "reason"], "additionalProperties": False}}},
]
SYS = {"role": "system", "content": "You help customers."}


def call(name, args, cid="c1"):
    return {"role": "assistant", "content": None, "tool_calls": [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}]}


def good(k: int) -> dict:
    oid = f"ORD-{100000 + k}"
    if k % 3 == 0:
        return {"messages": [SYS, {"role": "user", "content": f"Tell me a joke number {k}"},
                             {"role": "assistant", "content": "I can only help with orders."}]}
    return {"messages": [SYS, {"role": "user", "content": f"Where is {oid}?"}, call("check_order_status", {"order_id": oid}),
                         {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"},
                         {"role": "assistant", "content": f"{oid} has shipped."}]}


BAD = {  # code expected -> the raw line
    "utf8": b"\xff\xfe{not utf8}",
    "json": b'{"messages": [}',
    "not_object": b"[1, 2, 3]",
    "messages_missing": b'{"conversation": []}',
    "message_not_object": json.dumps({"messages": ["hello"]}).encode(),
    "role_unknown": json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}).encode(),
    "content_type": json.dumps({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}]}).encode(),
    "system_not_first": json.dumps({"messages": [{"role": "user", "content": "hi there"}, SYS, {"role": "assistant", "content": "y"}]}).encode(),
    "first_turn": json.dumps({"messages": [SYS, {"role": "assistant", "content": "hello"}]}).encode(),
    "tool_result_orphan": json.dumps({"messages": [SYS, {"role": "user", "content": "q1"}, {"role": "tool", "content": "r"},
                                                   {"role": "assistant", "content": "y"}]}).encode(),
    "tool_call_id_unknown": json.dumps({"messages": [SYS, {"role": "user", "content": "q2"}, call("check_order_status", {"order_id": "ORD-123456"}),
                                                     {"role": "tool", "tool_call_id": "zzz", "content": "r"}, {"role": "assistant", "content": "y"}]}).encode(),
    "call_unanswered": json.dumps({"messages": [SYS, {"role": "user", "content": "q3"}, call("check_order_status", {"order_id": "ORD-123456"}),
                                                {"role": "user", "content": "hello?"}, {"role": "assistant", "content": "y"}]}).encode(),
    "ends_without_assistant": json.dumps({"messages": [SYS, {"role": "user", "content": "q4"}]}).encode(),
    "assistant_empty": json.dumps({"messages": [SYS, {"role": "user", "content": "q5"}, {"role": "assistant", "content": "  "}]}).encode(),
    "tool_call_malformed": json.dumps({"messages": [SYS, {"role": "user", "content": "q6"},
                                                    {"role": "assistant", "content": None, "tool_calls": [{"function": {}}]}]}).encode(),
    "tool_undeclared": json.dumps({"messages": [SYS, {"role": "user", "content": "q7"}, call("delete_account", {"id": 1})]}).encode(),
    "arguments_not_json": json.dumps({"messages": [SYS, {"role": "user", "content": "q8"}, call("check_order_status", "{order_id: ORD}")]}).encode(),
    "arguments_schema": json.dumps({"messages": [SYS, {"role": "user", "content": "q9"}, call("submit_refund", {"order_id": "123", "reason": "bored", "amount": -5, "extra": 1})]}).encode(),
    "tools_invalid": json.dumps({"tools": [{"type": "function", "function": {"description": "no name"}}],
                                 "messages": [SYS, {"role": "user", "content": "q10"}, {"role": "assistant", "content": "y"}]}).encode(),
    "tool_call_id_duplicate": json.dumps({"messages": [SYS, {"role": "user", "content": "q11"},
                                                       {"role": "assistant", "content": None, "tool_calls": [
                                                           {"id": "d", "function": {"name": "check_order_status", "arguments": {"order_id": "ORD-123456"}}},
                                                           {"id": "d", "function": {"name": "check_order_status", "arguments": {"order_id": "ORD-654321"}}}]}]}).encode(),
    "duplicate": json.dumps(good(1)).encode(),
    "too_long": b'{"messages": "' + b"x" * (conversations.MAX_LINE_BYTES + 10) + b'"}',
}


def write_mixed(tmp_path):
    lines = []
    for k in range(1, 41):
        lines.append(json.dumps(good(k)).encode())
    for raw in BAD.values():
        lines.append(raw)
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    return data, tools


def args(data, tools, *extra):
    return ["--recipe", "smollm2-135m-tools", "--run", "v", f"data.train={data}", f"data.tools={tools}", "data.eval=null",
            "data.max_train=null", *extra]


def test_every_bad_line_is_rejected_with_its_reason(tmp_path, runs_dir):
    data, tools = write_mixed(tmp_path)
    validate.main(args(data, tools))
    out = runs_dir / "v" / "validate"
    report = json.loads((out / "report.json").read_text())
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert report["lines_read"] == 40 + len(BAD)
    assert report["balanced"] and report["accepted"] + report["rejected"] + report["unused_valid"] == report["lines_read"]
    assert report["accepted"] == 40 and report["rejected"] == len(BAD)
    by_line = {r["line"]: r for r in rejects}
    for offset, code in enumerate(BAD):
        r = by_line[41 + offset]
        assert code in {e["code"] for e in r["errors"]}, (code, r["errors"])
        assert all(e["message"] and e["fix"] for e in r["errors"]) and r["file"].endswith("mixed.jsonl")
    schema = next(r for r in rejects if r["errors"][0]["code"] == "arguments_schema")
    assert len(schema["errors"]) >= 3, "every schema violation is reported, not just the first"
    kept = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()] + \
           [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert len(kept) == 40
    assert all(isinstance(c["function"]["arguments"], dict) for r in kept for m in r["messages"] for c in m.get("tool_calls") or [])


def test_on_invalid_fail_lists_every_bad_line(tmp_path, runs_dir, capsys):
    data, tools = write_mixed(tmp_path)
    with pytest.raises(SystemExit) as exc:
        validate.main(args(data, tools, "data.on_invalid=fail"))
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and f"{len(BAD)} invalid line(s)" in captured.err
    for offset in range(len(BAD)):
        assert f"mixed.jsonl:{41 + offset}" in captured.out


def test_seed_article_example_with_signature_tools(tmp_path, runs_dir):
    system = ("You are a customer service agent for ShopCo. You have access to these tools:\n"
              "- check_order_status(order_id: str) -> OrderStatus\n"
              "- submit_refund(order_id: str, reason: str, amount: float) -> RefundResult\n"
              "- escalate_to_human(reason: str, priority: str = \"normal\") -> Ticket")
    convo = {"messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": "My order #A1234 arrived damaged. I want a refund."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "check_order_status", "arguments": "{\"order_id\": \"A1234\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\": \"delivered\", \"total\": 49.99}"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_2", "type": "function", "function": {
            "name": "submit_refund", "arguments": "{\"order_id\": \"A1234\", \"reason\": \"damaged\", \"amount\": 49.99}"}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "{\"refund_id\": \"R-1\", \"status\": \"approved\"}"},
        {"role": "assistant", "content": "Your refund of $49.99 has been approved."}]}
    bad = json.loads(json.dumps(convo))
    bad["messages"][4]["tool_calls"][0]["function"]["arguments"] = "{\"order_id\": \"A1234\", \"amount\": \"lots\"}"
    data = tmp_path / "seed.jsonl"
    data.write_text(json.dumps(convo) + "\n" + json.dumps(bad) + "\n")
    validate.main(["--recipe", "smollm2-135m-tools", "--run", "s", f"data.train={data}", "data.tools=null",
                   "data.eval=null", "data.max_train=null", "data.eval_fraction=0.5"])
    out = runs_dir / "s" / "validate"
    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] == 1 and report["rejected"] == 1
    errors = json.loads((out / "rejects.jsonl").read_text().splitlines()[0])["errors"]
    messages = " ".join(e["message"] for e in errors)
    assert "reason" in messages and "lots" in messages  # checked against the parsed signature


def test_check_line_never_crashes_on_hostile_input():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    schemas = validate.Schemas()
    tools, _ = conversations.normalize_tools(TOOLS)
    # NaN and infinities (json.dumps writes them as NaN/Infinity) and lone surrogates (written as \\udXXX escapes)
    # are drawn too: each used to get through or crash.
    text = st.text(st.characters(codec=None, categories=None), max_size=20)
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text,
                               lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
                               max_leaves=30)

    # Lines that carry their own tools, with hostile schemas ("$ref"s that go nowhere or to themselves).
    schema_words = st.sampled_from(["type", "properties", "required", "$ref", "items", "enum", "$defs", "a", "#",
                                    "#/$defs/a", "object", "string", "additionalProperties"])
    schema_values = st.recursive(st.none() | st.booleans() | st.integers() | schema_words,
                                 lambda kids: st.lists(kids, max_size=3) | st.dictionaries(schema_words, kids, max_size=4),
                                 max_leaves=20)
    own_tools = st.tuples(schema_values, json_values, json_values).map(lambda t: json.dumps({
        "tools": [{"type": "function", "function": {"name": "f", "parameters": t[0], "description": t[2]}}],
        "messages": [{"role": "user", "content": "hi"},
                     {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": t[1]}}]},
                     {"role": "tool", "tool_call_id": "c", "content": "ok"}, {"role": "assistant", "content": "done"}]}).encode())

    # Well-formed conversations with one hostile value put somewhere in them.
    def conversation(value, where):
        row = {"messages": [{"role": "user", "content": "hi"},
                            {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": TOOLS[0]["function"]["name"],
                                                                                          "arguments": {}}}]},
                            {"role": "tool", "tool_call_id": "c", "content": "ok"}, {"role": "assistant", "content": "done"}]}
        if where == 0:
            row["messages"][0]["content"] = value
        elif where == 1:
            row["messages"][1]["tool_calls"][0]["function"]["arguments"] = {"a": value}
        elif where == 2:
            row["messages"][1]["tool_calls"][0]["function"]["arguments"] = json.dumps({"a": value})
        else:
            row["messages"][2]["content"] = value
        return json.dumps(row).encode()

    hostile = st.tuples(st.floats() | text | json_values, st.integers(0, 3)).map(lambda t: conversation(*t))

    @settings(max_examples=2000, deadline=None)  # derandomized unless TOOLTUNE_HYPOTHESIS=fuzz (conftest.py)
    @given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                     st.lists(json_values, max_size=5).map(lambda ms: json.dumps({"messages": ms}).encode()),
                     own_tools, hostile))
    def check(raw):
        record, errors = validate.check_line(raw, tools if b'"tools"' not in raw else None, schemas)
        assert (record is None) == bool(errors)
        for e in errors:
            assert e["code"] in conversations.CODES and e["fix"]
        if record is not None:  # what is accepted is written as strict JSON and UTF-8, and reads back the same
            line = json.dumps(record, ensure_ascii=False, allow_nan=False)
            assert conversations.loads_strict(line.encode("utf-8").decode("utf-8")) == record

    check()
    deep = b"[" * 100000 + b"]" * 100000
    record, errors = validate.check_line(deep, tools, schemas)
    assert record is None and errors


@pytest.mark.parametrize("line,code", [
    ({"messages": [{"role": []}]}, "role_unknown"),  # an unhashable role crashed the set lookup
    ({"messages": [{"role": {"a": 1}, "content": "x"}]}, "role_unknown"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "string"}}}]}, "tools_invalid"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#"}}}]}, "tools_invalid"),
    ({"tools": [{"type": "function", "function": {"name": "f", "description": ["x"]}}]}, "tools_invalid"),
    # a lone surrogate escape: no character, so the split's hashing and every writer crashed on it
    ({"messages": [{"role": "user", "content": "hi \ud800 there"}, {"role": "assistant", "content": "ok"}]}, "surrogate"),
])
def test_lines_that_crashed_the_validator_are_rejected_with_a_reason(line, code):
    """Found by fuzzing check_line: each used to raise (TypeError, jsonschema's Unresolvable, RecursionError)
    or, for a description that is not text, to pass and break rendering later."""
    line.setdefault("messages", [{"role": "user", "content": "hi"},
                                 {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}]},
                                 {"role": "tool", "tool_call_id": "c", "content": "ok"},
                                 {"role": "assistant", "content": "done"}])
    record, errors = validate.check_line(json.dumps(line).encode(), None, validate.Schemas())
    assert record is None and code in {e["code"] for e in errors}, errors
    assert all(e["fix"] for e in errors)


def test_your_data_is_your_eval(tmp_path, runs_dir):
    """`make validate ARGS="data.train=... data.tools=..."` (the README's own-data keys, no data.eval): the held-out
    set is split from the user's file, nothing of the bundled agent is read or scored, and the report says so."""
    import os
    import subprocess

    from pipeline.lib.recipe import ROOT

    data, tools = tmp_path / "mine.jsonl", tmp_path / "my_tools.json"
    data.write_text("".join(json.dumps(good(k)) + "\n" for k in range(1, 301)))
    tools.write_text(json.dumps(TOOLS))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "TOOLTUNE_ARGS")}
    out = subprocess.run(["make", "--no-print-directory", "validate", "RUN=own", f"ARGS=data.train={data} data.tools={tools}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run = runs_dir / "own"
    evals = [json.loads(x) for x in (run / "validate" / "eval.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in (run / "validate" / "train.jsonl").read_text().splitlines()]
    assert evals and {r["source"]["file"] for r in evals + train} == {str(data)}  # every line from the user's file
    firsts = {conversations.first_user(r["messages"]) for r in evals}
    assert not firsts & {conversations.first_user(r["messages"]) for r in train}  # grouped: no first turn on both sides
    report = json.loads((run / "validate" / "report.json").read_text())
    assert report["eval_source"].startswith(f"split from data.train ({data})"), report["eval_source"]
    assert report["lines_read"] == 300 and report["rejected"] == 0
    # The default recipe's cap (data.max_train: 200) says so in the terminal, the report and report.html.
    assert report["train"] == 200 and report["unused_valid"] == 300 - 200 - report["eval"] > 0
    cap = (f"data.max_train=200 (the recipe's cap): training on 200 of the {300 - report['eval']} valid training "
           f"conversations, {report['unused_valid']} unused.")
    assert any(w.startswith(cap) for w in report["warnings"]), report["warnings"]
    assert cap in " ".join(out.stdout.split())
    assert "customer_service" not in (run / "recipe.yaml").read_text().split("data_sha256")[1]
    assert "eval: null" in (run / "recipe.yaml").read_text()
    page = (run / "report.html").read_text()  # Make refreshed the run's report after the stage
    assert "held-out set" in page and f"split from data.train ({data})" in page and "the recipe&#x27;s cap" in page
    # an explicit data.eval is kept
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps(good(k)) + "\n" for k in range(61, 71)))
    explicit = subprocess.run(["make", "--no-print-directory", "validate", "RUN=own2",
                               f"ARGS=data.train={data} data.tools={tools} data.eval={held}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert explicit.returncode == 0, explicit.stderr[-2000:]
    assert json.loads((runs_dir / "own2" / "validate" / "report.json").read_text())["eval_source"] == f"data.eval ({held})"


def test_a_call_id_reused_after_its_answer_is_accepted_and_counted(tmp_path, runs_dir):
    """Logged agents reuse ids across turns: once the earlier call is answered the pairing is unambiguous, so the
    conversation is kept (with a warning count); two open calls with one id still are not."""
    def reused(k: int) -> dict:
        a, b = f"ORD-{200000 + k}", f"ORD-{300000 + k}"
        return {"messages": [SYS, {"role": "user", "content": f"Where are {a} and then {b}?"},
                             call("check_order_status", {"order_id": a}),
                             {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"},
                             call("check_order_status", {"order_id": b}),  # id c1 again, after its answer
                             {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"delivered\"}"},
                             {"role": "assistant", "content": f"{a} has shipped and {b} was delivered."}]}

    schemas = conversations.Schemas()
    record, errors = conversations.check_line(json.dumps(reused(0)).encode(), TOOLS, schemas)
    assert errors == [] and record["reused_call_ids"] == 1
    assert [m["tool_call_id"] for m in record["messages"] if m["role"] == "tool"] == ["c1", "c1"]
    open_twice = reused(0)  # two parallel calls with one id, both open: which result answers which is unknown
    first, second = open_twice["messages"][2], open_twice["messages"][4]
    open_twice["messages"][2:6] = [{**first, "tool_calls": first["tool_calls"] + second["tool_calls"]},
                                   open_twice["messages"][3], open_twice["messages"][5]]
    record, errors = conversations.check_line(json.dumps(open_twice).encode(), TOOLS, schemas)
    assert record is None and "tool_call_id_duplicate" in {e["code"] for e in errors}

    data = tmp_path / "reuse.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in [good(k) for k in range(1, 21)] + [reused(k) for k in range(5)]))
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    validate.main(args(data, tools))
    report = json.loads((runs_dir / "v" / "validate" / "report.json").read_text())
    assert report["rejected"] == 0 and report["accepted"] == 25
    assert report["reused_call_ids"] == {"conversations": 5, "calls": 5}
    assert any("5 conversation(s) reuse a tool-call id" in w for w in report["warnings"])
    kept = (runs_dir / "v" / "validate" / "train.jsonl").read_text() + (runs_dir / "v" / "validate" / "eval.jsonl").read_text()
    assert "reused_call_ids" not in kept
