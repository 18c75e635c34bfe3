"""Conversations longer than max_seq_length (a long policy prompt, many tools, 20+ turns), as real agents'
logs are: `data.too_long=split` trains every assistant turn once in windows, `drop` and `fail` do what
they say, a turn that fits in no window stops the count with the length the data needs, and the eval
gives each turn the window training gives it."""

from __future__ import annotations

import json
import random

import pytest

from pipeline.lib import artifacts, windows
from pipeline.lib.models import load_tokenizer
from pipeline.lib.recipe import load
from pipeline.lib.scoring import eval_items, fit_windows
from pipeline.lib.template import Chat
from pipeline.stages import s1_validate as validate
from pipeline.stages import s2_count as count

RULES = ["Verify the caller's identity before any change to a booking.", "Never waive a fee without a supervisor's code.",
         "Quote prices in the currency of the original booking.", "A passenger may hold at most five bookings at once.",
         "Refunds go back to the original payment method only.", "Ask for the booking reference before searching.",
         "Cabin upgrades are sold only within 24 hours of departure.", "Pets travel in the cabin only on domestic flights."]


def agent_tools(n: int = 16) -> list[dict]:
    return [{"type": "function", "function": {
        "name": f"desk_{k}_lookup", "description": f"Look up desk record kind {k}. " + RULES[k % len(RULES)],
        "parameters": {"type": "object", "properties": {
            "reference": {"type": "string", "description": "The six-letter booking reference the caller gives."},
            "detail": {"type": "string", "description": "What the caller wants to know about the record."}},
            "required": ["reference"]}}} for k in range(n)]


def conversation(i: int, rounds: int, rng: random.Random) -> dict:
    policy = " ".join(f"Rule {k + 1}: {rng.choice(RULES)}" for k in range(50))  # about 2,800 characters
    msgs = [{"role": "system", "content": f"You are the airline's booking desk. {policy}"}]
    for t in range(rounds):
        ref = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(6))
        tool = f"desk_{rng.randrange(16)}_lookup"
        cid = f"call_{i}_{t}"
        msgs += [{"role": "user", "content": f"Round {t}: could you check booking {ref} for me, please? "
                                              + rng.choice(RULES)},
                 {"role": "assistant", "content": None, "tool_calls": [
                     {"id": cid, "type": "function", "function": {"name": tool, "arguments": {"reference": ref}}}]},
                 {"role": "tool", "tool_call_id": cid, "name": tool,
                  "content": json.dumps({"reference": ref, "status": rng.choice(["confirmed", "waitlisted"]),
                                         "seats": rng.randrange(1, 5)})},
                 {"role": "assistant", "content": f"Booking {ref} is on record; {rng.choice(RULES).lower()}"}]
    return {"id": f"desk-{i:03d}", "messages": msgs}


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """Four long conversations (20-30 assistant turns over a ~1.3k-token policy and 16 tools) and four short ones."""
    d = tmp_path_factory.mktemp("agent")
    rng = random.Random(7)
    records = [conversation(i, rounds, rng) for i, rounds in enumerate([10, 12, 15, 11, 1, 1, 2, 1])]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (d / "tools.json").write_text(json.dumps(agent_tools()))
    (d / "eval.jsonl").write_text(json.dumps(conversation(99, 1, rng)) + "\n")
    return d, records


def counted(runs_dir, run: str, agent_dir, *extra: str):
    argv = ["--recipe", "smollm2-135m-tools", "--run", run, f"data.train={agent_dir / 'train.jsonl'}",
            f"data.tools={agent_dir / 'tools.json'}", f"data.eval={agent_dir / 'eval.jsonl'}", *extra]
    validate.main(argv)
    count.main(argv)
    out = runs_dir / run / "count"
    rows = [json.loads(x) for x in (out / "train.tokens.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "report.json").read_text())


def runs_of_ones(mask: list[int]) -> int:
    return sum(1 for k, m in enumerate(mask) if m and (k == 0 or not mask[k - 1]))


def test_split_trains_every_assistant_turn_once(runs_dir, agent):
    agent_dir, records = agent
    rows, report = counted(runs_dir, "split", agent_dir)
    recipe = load("smollm2-135m-tools")
    chat = Chat.for_recipe(recipe, load_tokenizer(recipe))
    train = {r["id"]: r for r in artifacts.load_split(runs_dir / "split", "train")}
    from pipeline.lib.mask import tokenize_with_mask

    t = report["too_long"]
    assert t["policy"] == "split" and t["conversations"] == 4 and t["split"] == 4 and t["dropped"] == 0
    assert t["windows"] == sum(1 for r in rows if "#" in r["id"]) > 4
    assert t["history_tokens_left_out"] > 0
    assert report["examples"] == len(rows) and report["conversations"] == len(train)
    for cid, r in train.items():
        mine = [x for x in rows if x["id"] == cid or x["id"].startswith(cid + "#")]
        assert all(len(x["input_ids"]) <= recipe.max_seq_length for x in mine)
        assert all(len(x["input_ids"]) == len(x["mask"]) for x in mine)
        # Counted from the token masks: one trained run per assistant turn, over all of its windows, and
        # the same trained tokens as the whole conversation has.
        turns = sum(1 for m in r["messages"] if m["role"] == "assistant")
        assert sum(runs_of_ones(x["mask"]) for x in mine) == turns, cid
        _, _, ids, mask = tokenize_with_mask(chat, r["messages"], r["tools"])
        assert sum(sum(x["mask"]) for x in mine) == sum(mask), cid
        if len(ids) > recipe.max_seq_length:
            assert len(mine) > 1 and all(x["id"] != cid for x in mine)
            # Each window starts with the system prompt and the tools: one prefix group.
            assert len({x["group"] for x in mine}) == 1
            assert all(x["input_ids"][:200] == ids[:200] for x in mine)
        else:
            assert [x["id"] for x in mine] == [cid]
    assert "split into" in (runs_dir / "split" / "count" / "report.md").read_text()
    from pipeline.commands import report as run_report

    run_report.main(["--run", "split"])
    html = (runs_dir / "split" / "report.html").read_text()
    assert f"split into {t['windows']} windows, every assistant turn trained once" in html


def test_drop_and_fail_do_what_they_say(runs_dir, agent, capsys):
    agent_dir, _ = agent
    rows, report = counted(runs_dir, "drop", agent_dir, "data.too_long=drop")
    t = report["too_long"]
    assert t["dropped"] == 4 and t["windows"] == 0 and t["dropped_trained_tokens"] > 0
    assert sorted(r["id"] for r in rows) == ["desk-004", "desk-005", "desk-006", "desk-007"]
    assert t["dropped_tokens"] == sum(o["tokens"] for o in report["over_max_seq_length"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        counted(runs_dir, "fail", agent_dir, "data.too_long=fail")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "4 conversation(s) are longer than max_seq_length=2048 (data.too_long=fail" in err and "Traceback" not in err
    assert not (runs_dir / "fail" / "count" / "stage.json").exists()


def test_a_turn_that_fits_in_no_window_stops_with_the_length_the_data_needs(runs_dir, agent, capsys):
    agent_dir, _ = agent
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        counted(runs_dir, "short", agent_dir, "max_seq_length=1024")
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    report = json.loads((runs_dir / "short" / "count" / "report.json").read_text())
    need = report["too_long"]["needs_max_seq_length"]
    assert 1024 < need <= 2048, need
    assert f"The data needs max_seq_length >= {need}: set max_seq_length=2048" in err, err
    assert "its system prompt is" in err and "its tools" in err and "make plan RECIPE=smollm2-135m-tools" in err
    assert not (runs_dir / "short" / "count" / "stage.json").exists()
    from pipeline.lib.planner import plan

    assert plan(load("smollm2-135m-tools", ["max_seq_length=1024"]), runs_dir / "short")["data_needs_max_seq_length"] == \
        {"needs": need, "suggested": 2048}
    assert plan(load("smollm2-135m-tools", ["max_seq_length=2048"]), runs_dir / "short")["data_needs_max_seq_length"] is None


def test_the_eval_scores_each_turn_in_the_window_training_gives_it(agent):
    _, records = agent
    recipe = load("smollm2-135m-tools")
    chat = Chat.for_recipe(recipe, load_tokenizer(recipe))
    tools = agent_tools()
    r = dict(records[2], tools=tools)

    def length(ms):
        return len(chat.tokenizer(chat.render(ms, tools), add_special_tokens=False)["input_ids"])

    msgs = r["messages"]
    spans = windows.split(msgs, length, recipe.max_seq_length)
    assert len(spans) > 1
    items = eval_items([r], chat.fmt, None)
    fitted = fit_windows(chat, items, recipe.max_seq_length)
    assert fitted["windowed"] > 0 and fitted["no_window"] == 0
    by_turn = {it["turn"]: it for it in items}
    for start, _, first in spans:
        expect = msgs[:1] + msgs[start:first]
        got = by_turn[first]["messages"]
        assert [m.get("content") for m in got] == [m.get("content") for m in expect], first
    for it in items:  # every scored turn's prompt and reply fit
        assert length(it["messages"] + [it["reference"]["message"]]) <= recipe.max_seq_length
