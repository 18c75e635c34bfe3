"""`make synth`: the plan's coverage, the checks on a teacher's reply, and a real run against vLLM's OpenAI server
(a tiny random model as the teacher: the data is poor, the mechanism is real), killed half-way and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.commands import synth
from pipeline.lib import servers
from pipeline.lib.conversations import Schemas
from pipeline.lib.recipe import ROOT

TOOLS = [
    {"type": "function", "function": {"name": "check_order_status", "description": "Look up an order.",
                                      "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                     "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "cancel_order", "description": "Cancel an order.",
                                      "parameters": {"type": "object", "properties": {
                                          "order_id": {"type": "string"}, "reason": {"type": "string"}},
                                          "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "track_shipment", "description": "Where a parcel is.",
                                      "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                                     "required": ["order_id"]}}},
]
SECRET = "sk-teacher-secret-4242"


def call(name, args, cid="call_1"):
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": cid, "type": "function", "function": {"name": name, "arguments": args}}]}


def single(user="Where is order A-17?"):
    return {"messages": [{"role": "user", "content": user}, call("check_order_status", {"order_id": "A-17"}),
                         {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
                         {"role": "assistant", "content": "Order A-17 has shipped."}]}


def test_the_plan_covers_every_tool_in_every_kind_and_extends():
    items = synth.plan(TOOLS, 600, seed=0)
    kinds = Counter(i["kind"] for i in items)
    assert set(kinds) == set(synth.KINDS)
    for kind, share in synth.KINDS.items():
        assert abs(kinds[kind] / 600 - share) < 0.05, (kind, kinds[kind])
        if kind != "no_tool_fits":
            per_tool = Counter(i["tool"] for i in items if i["kind"] == kind)
            assert set(per_tool) == {t["function"]["name"] for t in TOOLS} and max(per_tool.values()) - min(per_tool.values()) <= 1
    assert synth.plan(TOOLS, 40, seed=0) == items[:40]  # a larger N extends the plan; nothing written is redone
    assert len({i["id"] for i in items}) == 600


def test_a_reply_is_accepted_only_as_a_valid_conversation_of_the_kind_asked_for():
    item = {"id": "synth-00001", "kind": "single_call", "tool": "check_order_status"}
    seen: dict = {}
    fenced = "Here it is:\n```json\n" + json.dumps(single()) + "\n```"
    line, entry = synth.judge(item, fenced, TOOLS, seen, Schemas())
    assert line and not entry and line["id"] == "synth-00001" and len(line["messages"]) == 4
    # the same first user message again: queued as a duplicate, not dropped
    line, entry = synth.judge({**item, "id": "synth-00002"}, json.dumps(single()), TOOLS, seen, Schemas())
    assert line is None and [e["code"] for e in entry["errors"]] == ["duplicate"] and "synth-00001" in entry["errors"][0]["message"]
    # the validator's own checks: an unknown tool, an argument of the wrong type
    bad = single("Cancel B-2")
    bad["messages"][1] = call("cancel_everything", {"order_id": "B-2"})
    line, entry = synth.judge({**item, "id": "synth-00003"}, json.dumps(bad), TOOLS, seen, Schemas())
    assert line is None and entry["errors"] and entry["conversation"]["messages"][1]["tool_calls"]
    wrong_type = single("Where is 42?")
    wrong_type["messages"][1] = call("check_order_status", {"order_id": 42})
    line, entry = synth.judge({**item, "id": "synth-00004"}, json.dumps(wrong_type), TOOLS, seen, Schemas())
    assert line is None and entry["errors"]
    # valid, but not the kind asked for
    line, entry = synth.judge({"id": "synth-00005", "kind": "no_tool_fits"}, json.dumps(single("Status of C-3?")),
                              TOOLS, seen, Schemas())
    assert line is None and [e["code"] for e in entry["errors"]] == ["wrong_kind"]
    line, entry = synth.judge({**item, "id": "synth-00006"}, "I cannot do that.", TOOLS, seen, Schemas())
    assert line is None and entry["errors"][0]["code"] == "not_json" and entry["reply"] == "I cannot do that."


def test_a_line_cut_off_by_a_kill_is_done_again(tmp_path):
    path = tmp_path / "review.jsonl"
    path.write_text('{"id": "synth-00001"}\n{"id": "synth-00002"}\n{"id": "synth-0')
    assert [r["id"] for r in synth.read_done(path)] == ["synth-00001", "synth-00002"]
    assert path.read_text() == '{"id": "synth-00001"}\n{"id": "synth-00002"}\n'


# --- the real thing: vLLM's OpenAI server as the teacher ---------------------------------------------------

SERVE_PY = ROOT / ".venv-serve" / "bin" / "python"


def teacher_model(smol_dir: Path, out: Path) -> Path:
    """An untrained random model: its replies are noise, which is what the checks must catch."""
    from bench.miniature import vllm_llama

    model, tok = vllm_llama(smol_dir)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


@pytest.mark.skipif(not (ROOT / ".venv-serve" / ".installed").is_file(),
                    reason="needs the serving environment (make serve-venv; make test installs it)")
def test_synth_against_a_real_server_resumes_after_a_kill_without_duplicates(smol_dir, tmp_path):

    model = teacher_model(smol_dir, tmp_path / "teacher")
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    out = tmp_path / "synth"
    port = servers.free_port()
    cmd = servers.vllm_command(str(model), "teacher", parser="hermes", chat_template=ROOT / "pipeline" / "templates" / "hermes.jinja",
                             max_len=4096, port=port, eager=True)
    n = 8
    argv = [sys.executable, "-m", "pipeline.commands.synth", "--tools", str(tools), "--n", str(n), "--teacher",
            f"http://127.0.0.1:{port}/v1", "--model", "teacher", "--out", str(out), "--concurrency", "2",
            "--max-tokens", "48", "--retries", "2"]
    env = {**os.environ, synth.KEY_ENV: SECRET}
    with servers.Server(cmd, port, tmp_path / "vllm.log") as server:
        server.wait_ready()
        first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            if len(lines(out / "accepted.jsonl")) + len(lines(out / "review.jsonl")) >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # kill -9: no chance to tidy up
        first.wait()
        written = len(lines(out / "accepted.jsonl")) + len(lines(out / "review.jsonl"))
        assert 2 <= written < n
        second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"resuming: {written} of {n} already written" in second.stdout.replace("\n", " ")
    accepted, queued = lines(out / "accepted.jsonl"), lines(out / "review.jsonl")
    ids = [r["id"] for r in accepted + queued]
    assert len(ids) == len(set(ids)) == n and set(ids) == {f"synth-{i:05d}" for i in range(1, n + 1)}
    report = json.loads((out / "report.json").read_text())
    assert report["generated"] == report["accepted"] + report["queued"] == n
    assert report["accepted"] == len(accepted) and report["queued"] == len(queued)
    for q in queued:  # every queued item says why, and keeps what the teacher wrote
        assert q["errors"] and ("reply" in q or "conversation" in q)
    for p in out.rglob("*"):  # the teacher's key is written nowhere
        assert SECRET not in p.read_text(errors="replace"), p


def test_review_decisions_accept_a_fixed_conversation_and_keep_a_dropped_one(tmp_path, capsys):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps(TOOLS))
    out = tmp_path / "synth"
    out.mkdir()
    (out / "accepted.jsonl").write_text(json.dumps({"id": "synth-00001", "kind": "single_call", **single()}) + "\n")
    broken = single("Where is my parcel D-4?")
    broken["messages"][1] = call("check_order_status", {"order": "D-4"})  # wrong parameter name
    fixed = json.loads(json.dumps(broken))
    fixed["messages"][1] = call("check_order_status", {"order_id": "D-4"})
    entries = [
        {"id": "synth-00002", "kind": "single_call", "tool": "check_order_status", "errors": [{"code": "args", "message": "x"}],
         "conversation": fixed, "decision": "accept"},
        {"id": "synth-00003", "kind": "single_call", "tool": "cancel_order", "errors": [{"code": "not_json", "message": "x"}],
         "reply": "nonsense", "decision": "drop"},
        {"id": "synth-00004", "kind": "single_call", "tool": "cancel_order", "errors": [{"code": "args", "message": "x"}],
         "conversation": broken, "decision": "accept"},  # accepted without the fix: checked again, stays queued
        {"id": "synth-00005", "kind": "parallel", "tool": "track_shipment", "errors": [{"code": "not_json", "message": "x"}],
         "reply": "??"},
    ]
    (out / "review.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    synth.main(["--review", "--tools", str(tools), "--out", str(out)])
    accepted, queued, dropped = lines(out / "accepted.jsonl"), lines(out / "review.jsonl"), lines(out / "dropped.jsonl")
    assert [r["id"] for r in accepted] == ["synth-00001", "synth-00002"] and accepted[1]["reviewed"] is True
    assert [r["id"] for r in dropped] == ["synth-00003"]
    assert [r["id"] for r in queued] == ["synth-00004", "synth-00005"] and "decision" not in queued[0]
    assert queued[0]["errors"] and queued[0]["errors"][0]["code"] != "args"  # the validator's own verdict now
    page = (out / "review.html").read_text()
    assert "synth-00004" in page and "synth-00005" in page and "synth-00002" not in page
    assert "1 accepted" in capsys.readouterr().out.replace("\n", " ")
    # the validate stage reads the accepted file as training data
    from pipeline.lib.conversations import read_records

    assert len(read_records(out / "accepted.jsonl", TOOLS)) == 2
