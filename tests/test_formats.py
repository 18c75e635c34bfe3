import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.lib.conversations import Schemas, check_line  # noqa: E402
from pipeline.lib.formats import (  # noqa: E402
    bfcl_types_to_json_schema,
    convert,
    import_bfcl,
    import_openai_legacy,
    import_sharegpt,
    load_records,
    validate_canonical,
)

FIXTURES = ROOT.parent / "shared" / "fixtures"
DATA = Path(__file__).resolve().parent / "data"


def fixture(*parts):
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"fixtures not available: {path}")
    return path


def assert_canonical(rec):
    """Independent well-formedness check (does not rely on validate_canonical)."""
    assert set(rec) == {"messages", "tools"}
    names = {t["function"]["name"] for t in rec["tools"]}
    assert all(t["type"] == "function" and isinstance(t["function"]["parameters"], dict) for t in rec["tools"])
    open_calls = {}
    msgs = rec["messages"]
    for m in msgs:
        if m["role"] == "tool":
            assert m["tool_call_id"] in open_calls, m
            assert open_calls.pop(m["tool_call_id"]) == m["name"]
            assert isinstance(m["content"], str)
            continue
        assert not open_calls, f"unanswered calls before {m['role']}"
        if m["role"] == "assistant" and m.get("tool_calls"):
            assert m["content"] is None
            for c in m["tool_calls"]:
                assert c["type"] == "function"
                assert c["function"]["name"] in names
                assert isinstance(c["function"]["arguments"], dict)
                open_calls[c["id"]] = c["function"]["name"]
        else:
            assert m["role"] in ("system", "user", "assistant")
            assert isinstance(m["content"], str)
    assert msgs[-1]["role"] == "assistant"
    assert validate_canonical(rec) == []


def run_import(importer, path):
    raws = [r for _, r, _ in load_records(path)]
    results = list(importer(raws))
    assert len(results) == len(raws)
    ok = [c for c, errs in results if c is not None]
    bad = [errs for c, errs in results if c is None]
    for rec in ok:
        assert_canonical(rec)
    for errs in bad:
        assert errs and all({"code", "message", "fix"} <= set(e) for e in errs)
    return raws, ok, bad


@pytest.mark.parametrize("name", ["glaive_toolcall_en_demo.json", "glaive_toolcall_zh_demo.json"])
def test_glaive_fixture(name):
    path = fixture("external", "glaive_sharegpt", name)
    raws, ok, bad = run_import(import_sharegpt, path)
    assert len(raws) == 300
    assert len(ok) >= 0.95 * len(raws)
    assert sum(1 for r in ok if any(m.get("tool_calls") for m in r["messages"])) > 50
    # the zh demo has two records whose call was written as prose ("AI 计算折扣: {...}")
    assert {e[0]["code"] for e in bad} <= {"orphan_observation", "arguments_schema"}  # a call its own schema refuses
    assert all(check_line(json.dumps(r).encode(), None, Schemas())[1] == [] for r in ok)  # what is written, validate accepts


def test_toolbench_fixture():
    path = fixture("external", "toolbench", "answer")
    raws, ok, bad = run_import(import_openai_legacy, path)
    assert len(raws) == 15
    # Rejects by policy: searches ToolBench marked invalid (no train_messages), give-ups,
    # and one trajectory that calls a tool missing from its function list.
    policy = {"toolbench_no_trajectory", "toolbench_give_up", "tool_undeclared"}
    codes = [e[0]["code"] for e in bad]
    assert set(codes) <= policy, codes
    eligible = len(raws) - codes.count("toolbench_no_trajectory") - codes.count("toolbench_give_up")
    assert len(ok) >= 0.95 * (eligible - 1)  # only the undeclared-tool record may fail among eligible ones
    for rec in ok:
        names = {t["function"]["name"] for t in rec["tools"]}
        assert "Finish" not in names
        assert not any(c["function"]["name"] == "Finish" for m in rec["messages"] for c in m.get("tool_calls") or [])
        assert rec["messages"][-1]["content"]  # Finish's final_answer became the text answer


def test_convert_writes_outputs_and_rejects(tmp_path):
    path = fixture("external", "glaive_sharegpt", "glaive_toolcall_zh_demo.json")
    out = tmp_path / "zh.jsonl"
    summary = convert("glaive", path, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert summary["read"] == 300 and summary["written"] == len(lines)
    assert summary["written"] + summary["skipped"] == summary["read"]
    rejects = [json.loads(x) for x in Path(str(out) + ".rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == summary["skipped"]
    for r in rejects:
        assert r["source"] == str(path) and isinstance(r["index"], int) and r["raw"] and r["errors"]
    assert sum(summary["skip_reasons"].values()) == summary["skipped"]


# ----------------------------------------------------------------- synthetic sharegpt / legacy


def test_sharegpt_basic_and_errors():
    tools = json.dumps([{"name": "add", "description": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}])
    good = {
        "system": "sys",
        "tools": tools,
        "conversations": [
            {"from": "human", "value": "add 1"},
            {"from": "function_call", "value": json.dumps({"name": "add", "arguments": json.dumps({"a": 1})})},
            {"from": "observation", "value": "1"},
            {"from": "gpt", "value": "It is 1."},
        ],
    }
    undeclared = json.loads(json.dumps(good))
    undeclared["conversations"][1]["value"] = json.dumps({"name": "mul", "arguments": {}})
    ends_user = {"tools": "[]", "conversations": [{"from": "human", "value": "hi"}]}
    bad_json = {"tools": "[", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    results = list(import_sharegpt([good, undeclared, ends_user, bad_json, "nope"]))
    rec, errs = results[0]
    assert errs == []
    assert rec["messages"][0] == {"role": "system", "content": "sys"}
    call = rec["messages"][2]["tool_calls"][0]
    assert call["id"] == "call_0" and call["function"]["arguments"] == {"a": 1}
    assert rec["messages"][3] == {"role": "tool", "tool_call_id": "call_0", "name": "add", "content": "1"}
    assert rec["tools"][0]["type"] == "function"
    assert results[1][0] is None and results[1][1][0]["code"] == "tool_undeclared"
    assert results[2][1][0]["code"] == "ends_without_assistant"
    assert results[3][1][0]["code"] == "tools_invalid"
    assert results[4][1][0]["code"] == "not_object"


def test_openai_legacy_generic_and_finish():
    fn = {"name": "get", "description": "", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "optional": ["q"], "required": ["q"]}}
    finish = {"name": "Finish", "parameters": {"type": "object", "properties": {"return_type": {"type": "string"}}}}
    msgs = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "thinking", "function_call": {"name": "get", "arguments": "{\"q\": \"x\"}"}},
        {"role": "function", "name": "get", "content": "result"},
        {"role": "assistant", "content": None, "function_call": {"name": "Finish", "arguments": json.dumps({"return_type": "give_answer", "final_answer": "done"})}},
    ]
    give_up = msgs[:3] + [{"role": "assistant", "content": None, "function_call": {"name": "Finish", "arguments": "{\"return_type\": \"give_up_and_restart\"}"}}]
    orphan = [{"role": "user", "content": "go"}, {"role": "function", "name": "get", "content": "r"}, {"role": "assistant", "content": "x"}]
    results = list(import_openai_legacy([
        {"messages": msgs, "functions": [fn, finish]},
        {"messages": give_up, "functions": [fn, finish]},
        {"messages": orphan, "functions": [fn]},
        {"answer_generation": {"valid_data": False, "function": [fn]}},
        {"query": "Find me a quote", "query_id": 7},
    ]))
    rec, errs = results[0]
    assert errs == []
    assert_canonical(rec)
    assert [t["function"]["name"] for t in rec["tools"]] == ["get"]
    assert "optional" not in rec["tools"][0]["function"]["parameters"]
    assert rec["tools"][0]["function"]["parameters"]["required"] == []
    assert rec["messages"][1]["content"] is None  # ToolBench thought dropped
    assert rec["messages"][-1] == {"role": "assistant", "content": "done"}
    assert results[1][1][0]["code"] == "toolbench_give_up"
    assert results[2][1][0]["code"] == "tool_result_orphan"
    assert results[3][1][0]["code"] == "toolbench_no_trajectory"
    assert results[4][1][0]["code"] == "toolbench_query_only"  # a query list entry is not a conversation


# ----------------------------------------------------------------- bfcl


def test_bfcl_type_mapping():
    schema = {"type": "dict", "properties": {"a": {"type": "tuple", "items": {"type": "float"}},
                                             "b": {"type": "any"}, "c": {"type": "dict", "properties": {"d": {"type": "integer"}}}}}
    out = bfcl_types_to_json_schema(schema)
    assert out == {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "number"}}, "b": {},
                                                    "c": {"type": "object", "properties": {"d": {"type": "integer"}}}}}
    assert schema["type"] == "dict"  # input untouched


def test_bfcl_sample(tmp_path):
    out = tmp_path / "bfcl.jsonl"
    summary = convert("bfcl", DATA / "bfcl_questions.jsonl", out, answers_path=DATA / "bfcl_answers.jsonl")
    assert (summary["read"], summary["written"], summary["skipped"]) == (5, 4, 1)
    assert summary["skip_reasons"] == {"bfcl_no_answer": 1}
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    for r in recs:
        assert_canonical(r)
    calls = [c["function"] for r in recs for c in r["messages"][-1]["tool_calls"]]
    assert calls[0] == {"name": "geometry.triangle_area", "arguments": {"base": 10, "height": 5}}  # "" first -> omitted
    assert calls[1]["name"] == "maps.route.plot"
    assert calls[1]["arguments"] == {"waypoints": [[1, 2], [3, 4]], "options": {"avoid_tolls": True}}
    assert calls[2]["arguments"] == {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}
    assert [c["arguments"] for c in calls[3:]] == [{"city": "Paris"}, {"city": "Oslo"}]
    props = recs[1]["tools"][0]["function"]["parameters"]["properties"]
    assert props["waypoints"]["items"]["type"] == "array" and props["options"]["properties"]["extra"] == {"description": "Anything else."}
    reject = json.loads(Path(str(out) + ".rejects.jsonl").read_text().splitlines()[0])
    assert reject["raw"]["id"] == "tt_irrelevance_4" and reject["errors"][0]["code"] == "bfcl_no_answer"


def test_bfcl_without_answers_rejects_all():
    raws = [r for _, r, _ in load_records(DATA / "bfcl_questions.jsonl")]
    results = list(import_bfcl(raws))
    assert all(c is None and e[0]["code"] == "bfcl_no_answer" for c, e in results)


def test_cli_and_atomic_output(tmp_path):
    from pipeline.commands.importer import main

    out = tmp_path / "o.jsonl"
    assert main(["bfcl", str(DATA / "bfcl_questions.jsonl"), str(out), "--answers", str(DATA / "bfcl_answers.jsonl")]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert main(["sharegpt", str(tmp_path / "missing.json"), str(out)]) == 2


def test_openai_log_production_failures_go_to_review_with_their_conversation(tmp_path):
    """Logged chat completions: valid exchanges become conversations; a call to an unknown tool, one that fails
    its schema, or one marked wrong goes to the rejects (review) file whole; a correction makes it training data."""
    from pipeline.lib.conversations import read_records
    from pipeline.lib.formats import convert

    tools = [{"type": "function", "function": {"name": "check_order_status", "description": "Look up an order.",
                                               "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                              "required": ["order_id"]}}}]

    def exchange(reply, **extra):
        return {"request": {"model": "m", "messages": [{"role": "user", "content": "Where is A-1?"}], "tools": tools},
                "response": {"id": "chatcmpl-1", "choices": [{"index": 0, "message": reply}]}, **extra}

    def calls(name, args):
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}

    good = calls("check_order_status", {"order_id": "A-1"})
    logs = [exchange(good), exchange(calls("order_lookup", {"order_id": "A-1"})),
            exchange(calls("check_order_status", {"order": "A-1"})), exchange(good, label="wrong"),
            exchange(calls("order_lookup", {"id": 1}), label="wrong", correction=good),
            exchange({"role": "assistant", "content": "Which order do you mean?"})]
    src = tmp_path / "requests.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in logs))
    out = tmp_path / "prod.jsonl"
    summary = convert("openai-log", src, out)
    assert summary["read"] == 6 and summary["written"] == 3 and summary["skipped"] == 3
    rejects = [json.loads(x) for x in Path(summary["rejects_path"]).read_text().splitlines()]
    assert [r["errors"][0]["code"] for r in rejects] == ["unknown_tool", "call_schema", "marked_wrong"]
    for r in rejects:  # the whole conversation is kept beside the raw log, ready to be fixed
        assert r["conversation"]["messages"][-1]["role"] == "assistant" and r["conversation"]["tools"] == tools
    written = read_records(out, None)
    assert len(written) == 3
    assert written[1]["messages"][-1]["tool_calls"][0]["function"]["name"] == "check_order_status"  # the correction
    assert written[0]["messages"][-1]["tool_calls"][0]["function"]["arguments"] == {"order_id": "A-1"}


def test_openai_log_a_session_logged_as_growing_requests_is_one_conversation(tmp_path):
    """An agent logs a request per turn, each holding the whole conversation so far: those become one
    conversation (the longest), not one per request repeating its first turns."""
    from pipeline.lib.conversations import read_records
    from pipeline.lib.formats import convert

    tools = [{"type": "function", "function": {"name": "check_order_status", "description": "Look up an order.",
                                               "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                              "required": ["order_id"]}}}]
    turns = [{"role": "system", "content": "You look up orders."}, {"role": "user", "content": "Where is A-1?"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "call_1", "type": "function", "function": {"name": "check_order_status", "arguments": "{\"order_id\": \"A-1\"}"}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "{\"status\": \"shipped\"}"},
             {"role": "assistant", "content": "A-1 has shipped."},
             {"role": "user", "content": "And B-2?"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "call_2", "type": "function", "function": {"name": "check_order_status", "arguments": "{\"order_id\": \"B-2\"}"}}]},
             {"role": "tool", "tool_call_id": "call_2", "content": "{\"status\": \"delivered\"}"},
             {"role": "assistant", "content": "B-2 was delivered."}]
    ends = [i for i, m in enumerate(turns) if m["role"] == "assistant"]  # each logged request ends before a reply
    logs = [{"request": {"messages": turns[:e], "tools": tools}, "response": {"choices": [{"message": turns[e]}]}} for e in ends]
    other = {"request": {"messages": [turns[0], {"role": "user", "content": "Hi"}], "tools": tools},
             "response": {"choices": [{"message": {"role": "assistant", "content": "Hello! Which order?"}}]}}
    src = tmp_path / "requests.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in [logs[1], other, logs[0], logs[3], logs[2]]))
    summary = convert("openai-log", src, tmp_path / "out.jsonl")
    assert summary["read"] == 5 and summary["written"] == 2
    assert summary["skip_reasons"] == {"merged_into_session": 3}
    rejects = [json.loads(x) for x in Path(summary["rejects_path"]).read_text().splitlines()]
    assert {r["index"] for r in rejects} == {0, 2, 4} and all("record 3" in r["errors"][0]["message"] for r in rejects)
    written = read_records(tmp_path / "out.jsonl", None)
    assert [len(r["messages"]) for r in written] == [3, len(turns)]
    assert written[1]["messages"][-1]["content"] == "B-2 was delivered."


def test_xlam_and_hermes_rows_import_as_conversations_that_validate(tmp_path, fixtures_dir):
    """Real rows of Salesforce's xLAM/APIGen (500) and NousResearch's Hermes function calling (1): each converted
    line passes the validator's checker, or is rejected with its code."""
    from pipeline.lib.conversations import read_records
    from pipeline.lib.formats import convert, xlam_type

    assert xlam_type("List[Dict[str, int]]") == {"type": "array", "items": {"type": "object"}}
    assert xlam_type("Union[int, str]") == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert xlam_type("Callable") == {} and xlam_type("float") == {"type": "number"}

    ext = fixtures_dir / "external"
    summary = convert("xlam", ext / "xlam_apigen" / "xlam_test.json", tmp_path / "xlam.jsonl")
    assert summary["read"] == 500 and summary["written"] == 480
    assert summary["skip_reasons"] == {"arguments_schema": 20}  # e.g. a latitude 51.5074 for an `int` parameter
    written = read_records(tmp_path / "xlam.jsonl", None)  # the validator's own checker, again
    assert len(written) == 480
    source = json.loads((ext / "xlam_apigen" / "xlam_test.json").read_text())
    first = written[0]
    assert first["messages"][0] == {"role": "user", "content": source[0]["query"]}
    answers = json.loads(source[0]["answers"])
    assert [c["function"]["name"] for c in first["messages"][1]["tool_calls"]] == [a["name"] for a in answers]
    assert all(len(r["messages"][1]["tool_calls"]) >= 3 for r in written)  # every row of the sample has 3-10 calls
    lamp = next(t["function"] for t in first["tools"] if t["function"]["name"] == "products_search")
    assert lamp["parameters"]["type"] == "object" and lamp["parameters"]["properties"]["curpage"]["type"] == "integer"

    summary = convert("hermes", ext / "hermes_fc_v1" / "hermes_toolcall.jsonl", tmp_path / "hermes.jsonl")
    assert summary["read"] == 1 and summary["written"] == 1 and summary["skipped"] == 0
    (row,) = read_records(tmp_path / "hermes.jsonl", None)
    roles = [m["role"] for m in row["messages"]]
    assert roles[:5] == ["system", "user", "assistant", "tool", "tool"] and roles[-1] == "assistant"
    system = row["messages"][0]["content"]
    assert "<tools>" not in system and "set_smart_light_color" not in system and "function calling AI model" in system
    calls = row["messages"][2]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["set_smart_light_color", "sync_lights_with_automation_system"]
    assert calls[0]["function"]["arguments"] == {"room": "living room", "brightness": "dim", "color": "warm"}
    assert [(m["tool_call_id"], m["name"]) for m in row["messages"][3:5]] == [(c["id"], c["function"]["name"]) for c in calls]
    assert json.loads(row["messages"][3]["content"])["status"] == "success"
    assert {t["function"]["name"] for t in row["tools"]} == {c["function"]["name"] for c in calls}


def test_hf_datasets_in_trl_form_import_through_datasets(tmp_path, fixtures_dir):
    """A dataset in TRL's `messages` + `tools` form, as `datasets` stores it (a save_to_disk folder, parquet): Arrow
    gives every dict of a column every key any row has, set to null; the import takes them out, so each row comes
    back as the validator reads the original JSON Lines."""
    import datasets

    from pipeline.lib.conversations import read_records
    from pipeline.lib.formats import convert

    src = fixtures_dir / "external" / "openai_tools_azure" / "stock_toolcall_training.jsonl"
    rows = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
    ds = datasets.Dataset.from_list(rows)
    assert any(v is None for v in ds[0]["tools"][0]["function"]["parameters"]["properties"].values()), \
        "Arrow's shared struct type adds the other tools' parameters as null"
    ds.save_to_disk(str(tmp_path / "saved"))
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    expected = read_records(src, None)
    for name, source in (("saved", tmp_path / "saved"), ("parquet", tmp_path / "rows.parquet")):
        out = tmp_path / f"{name}.jsonl"
        summary = convert("hf", source, out)
        assert summary["read"] == len(rows) == 86 and summary["written"] == 86 and summary["skipped"] == 0, summary
        got = read_records(out, None)
        assert [r["messages"] for r in got] == [r["messages"] for r in expected], name
        assert [r["tools"] for r in got] == [r["tools"] for r in expected], name


def test_make_import_as_the_readme_shows_it(tmp_path, fixtures_dir):
    """`make import FORMAT=... IN=... OUT=...` through Make: it writes the file and says what it did."""
    import os
    import subprocess

    from pipeline.lib.recipe import ROOT

    out = tmp_path / "x.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    run = subprocess.run(["make", "--no-print-directory", "import", "FORMAT=xlam",
                          f"IN={fixtures_dir / 'external' / 'xlam_apigen' / 'xlam_test.json'}", f"OUT={out}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 480
    said = " ".join(run.stdout.split())
    assert "records read │ 500" in said and "arguments_schema │ 20" in said, said[-1500:]
