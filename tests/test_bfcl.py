"""tooltune's BFCL scoring (a reply in the run's call format, parsed by tooltune's parser, judged by BFCL's own AST
checker from the `bfcl-eval` package) on BFCL's own possible answers: every possible answer scores right, in each
of its acceptable forms, and a corrupted one does not."""

from __future__ import annotations

import copy
import json

import pytest

bfcl = pytest.importorskip("pipeline.lib.bfcl")
pytest.importorskip("bfcl_eval")

from pipeline.lib.formats import _bfcl_resolve  # noqa: E402


def pick(params: dict, required: list[str], last: bool) -> dict:
    """One possible answer's arguments: each parameter's first acceptable value, an optional one left out where BFCL
    allows it (`""` among its values; BFCL's checker still wants every parameter the function requires), or each
    parameter's last acceptable value."""
    out = {}
    for name, options in params.items():
        options = options if isinstance(options, list) else [options]
        values = [v for v in options if v != ""]
        if not values or (not last and "" in options and name not in required):
            continue
        out[name] = _bfcl_resolve(copy.deepcopy(values[-1] if last else values[0]))
    return out


def calls_of(item: dict, last: bool = False) -> list[dict]:
    required = {f["name"]: (f.get("parameters") or {}).get("required", []) for f in item["question"]["function"]}
    return [{"name": n, "arguments": pick(p, required.get(n, []), last)} for gt in item["answer"] for n, p in gt.items()]


def reply(calls: list[dict]) -> str:
    return "\n".join(f'<tool_call>{json.dumps({"name": c["name"], "arguments": c["arguments"]})}</tool_call>' for c in calls)


def corrupt(value):
    """A value no possible answer accepts for the same parameter."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7919
    if isinstance(value, str):
        return value + " (changed)"
    if isinstance(value, list):
        return value + ["changed"]
    return {"changed": 1}


@pytest.fixture(scope="module")
def answered() -> list[dict]:
    return [it for it in bfcl.items(bfcl.NON_LIVE + bfcl.LIVE, None) if it["answer"]]


def direct(item: dict, calls: list[dict]) -> bool:
    """BFCL's checker on the arguments themselves, with no template, reply text or parser in between."""
    return bool(bfcl.checker()(item["question"]["function"], [{c["name"]: c["arguments"]} for c in calls], item["answer"],
                               item["category"])["valid"])


@pytest.mark.parametrize("last", [False, True], ids=["first_acceptable", "last_acceptable"])
def test_every_possible_answer_scores_as_bfcls_checker_scores_it(answered, last, capsys):
    calls = [calls_of(it, last) for it in answered]
    result, preds = bfcl.score(answered, [reply(c) for c in calls], "hermes")
    theirs = [direct(it, c) for it, c in zip(answered, calls)]
    differ = [(p["id"], p["why"]) for p, t in zip(preds, theirs) if p["ok"] != t]
    assert not differ, differ[:5]  # tooltune's reply -> parse -> checker path loses nothing
    unsatisfiable = [(p["id"], p["why"]) for p in preds if not p["ok"]]
    # BFCL's own data: a few ground truths contradict their function (a required parameter the answer may omit,
    # a parameter the function does not have, an empty list of acceptable values); nothing else may fail
    assert len(unsatisfiable) <= len(answered) // 100, unsatisfiable
    assert {c for c in result["categories"]} == set(bfcl.NON_LIVE + bfcl.LIVE)
    with capsys.disabled():
        print(f"\nBFCL possible answers ({'last' if last else 'first'} acceptable values): {len(preds) - len(unsatisfiable)} of "
              f"{len(preds)} right, the same verdicts as BFCL's checker on the raw arguments; its own data contradicts "
              f"itself on {len(unsatisfiable)}: {unsatisfiable[:4]}")


def test_a_corrupted_answer_scores_wrong(answered):
    texts, kept = [], []
    for it in answered:
        calls = calls_of(it)
        target = next((c for c in calls if c["arguments"]), None)
        if target is None:
            continue  # a call without arguments has no value to corrupt: its name is corrupted below
        name = next(iter(target["arguments"]))
        target["arguments"] = copy.deepcopy(target["arguments"])
        target["arguments"][name] = corrupt(target["arguments"][name])
        texts.append(reply(calls))
        kept.append(it)
    _, preds = bfcl.score(kept, texts, "hermes")
    right = [p["id"] for p in preds if p["ok"]]
    assert len(kept) > 2000 and not right, right[:5]
    # a wrong function name, a missing call, and text instead of a call are wrong too
    it = answered[0]
    call = calls_of(it)[0]
    for text in (reply([dict(call, name=call["name"] + "_x")]), "", "I can't help with that."):
        assert not bfcl.score([it], [text], "hermes")[1][0]["ok"], text


def test_irrelevance_is_right_only_without_a_call():
    it = bfcl.items(("irrelevance",), 3)
    tool = it[0]["tools"][0]["function"]["name"]
    _, preds = bfcl.score(it[:2], ["None of the functions can answer this.", reply([{"name": tool, "arguments": {}}])], "hermes")
    assert [p["ok"] for p in preds] == [True, False]


def test_selection_counts_the_expected_functions_whatever_their_arguments(answered):
    simple = next(it for it in answered if it["category"] == "simple_python")
    parallel = next(it for it in answered if it["category"] == "parallel" and len(it["answer"]) == 2)
    call = calls_of(simple)[0]
    wrong_args = dict(call, arguments={k: corrupt(v) for k, v in call["arguments"].items()})
    other = dict(call, name=call["name"] + "_x")
    texts = [reply([call]), reply([wrong_args]), reply([other]), reply([call, call]), "No call.",
             reply(calls_of(parallel)), reply(calls_of(parallel)[:1])]
    bitems = [simple] * 5 + [parallel] * 2
    result, preds = bfcl.score(bitems, texts, "hermes")
    assert [(p["ok"], p["selected"]) for p in preds] == [
        (True, True), (False, True), (False, False), (False, False), (False, False), (True, True), (False, False)]
    assert result["categories"]["simple_python"]["selection"] == pytest.approx(2 / 5)
    irr = bfcl.items(("irrelevance",), 2)
    _, preds = bfcl.score(irr, ["None fits.", reply([{"name": irr[1]["tools"][0]["function"]["name"], "arguments": {}}])], "hermes")
    assert [p["selected"] for p in preds] == [True, False]  # for irrelevance, selecting is calling nothing


def test_the_summary_columns_follow_the_leaderboard():
    acc = {c: 0.5 for c in bfcl.CATEGORIES} | {"simple_python": 1.0, "live_simple": 1.0, "irrelevance": 0.0}
    per = {c: {"size": 100} for c in bfcl.CATEGORIES} | {"live_simple": {"size": 300}}
    s = bfcl.summary(acc, per)
    assert s["non_live_ast"] == pytest.approx((1.0 + 0.5 * 3) / 4)  # unweighted
    assert s["live"] == pytest.approx((300 * 1.0 + 3 * 100 * 0.5) / 600)  # weighted by the categories' sizes
    assert s["irrelevance"] == pytest.approx(0.25)
    assert bfcl.summary({"simple_python": 1.0}, {"simple_python": {"size": 1}}) == {
        "non_live_ast": None, "live": None, "irrelevance": None}


@pytest.mark.parametrize("last", [False, True], ids=["first_acceptable", "last_acceptable"])
def test_tooltunes_argument_metric_accepts_what_bfcls_checker_accepts(answered, last):
    """BFCL imported to the canonical format keeps every acceptable form (`acceptable` on each call); the eval's own
    argument metric, scoring a reply against that record, agrees with BFCL's checker on each possible answer, in
    each acceptable form, and on each corrupted one."""
    from pipeline.lib.formats import import_bfcl
    from pipeline.lib.scoring import eval_items, score

    records, items, texts, theirs, refused = [], [], [], [], []
    for it in answered:
        (rec, errors), = import_bfcl([it["question"]], {it["id"]: it["answer"]})
        if rec is None:
            refused += [e["code"] for e in errors[:1]]
        if rec is None or not direct(it, calls_of(it, last)):
            continue  # rejected by the validator, or one of the few answers BFCL's own checker refuses (see above)  # BFCL's own contradictions (an empty list of values, a required argument it may omit)
        rec["id"] = it["id"]
        (item,) = eval_items([rec], "hermes", None)
        for corrupted in (False, True):
            calls = calls_of(it, last)
            if corrupted:
                target = next((c for c in calls if c["arguments"]), None)
                if target is None:
                    continue
                key = next(iter(target["arguments"]))
                target["arguments"] = dict(target["arguments"], **{key: corrupt(target["arguments"][key])})
            items.append(item)
            texts.append(reply(calls))
            theirs.append(direct(it, calls))
        records.append(rec)
    # The importer checks with the validator: what it refuses is only BFCL's answers that their own schemas refuse
    # (a required argument left out, a string where the schema says array, a value outside its enum): 26 of 2,351.
    assert set(refused) <= {"arguments_schema"} and len(refused) < 0.015 * len(answered)
    assert len(records) > 0.98 * len(answered)
    assert any(c.get("acceptable") for r in records for m in r["messages"] for c in m.get("tool_calls") or [])
    _, _, preds = score(items, texts, "hermes")
    ours = [p["ok"] for p in preds]
    differ = [(it["id"], t) for it, o, t in zip(items, ours, theirs) if o != t]
    assert not differ, differ[:5]
    assert sum(ours) > 2000 and sum(not o for o in ours) > 2000  # both verdicts, many times over


def test_the_validator_keeps_acceptable_forms_and_refuses_ones_that_do_not_admit_the_call():
    from pipeline.lib.conversations import Schemas, check_line

    tools = [{"type": "function", "function": {"name": "area", "parameters": {
        "type": "object", "properties": {"base": {"type": "number"}, "unit": {"type": "string"}}, "required": ["base"]}}}]

    def line(acceptable):
        call = {"id": "c1", "type": "function", "function": {"name": "area", "arguments": {"base": 10}}, "acceptable": acceptable}
        return json.dumps({"messages": [{"role": "user", "content": "Area of base 10?"},
                                        {"role": "assistant", "content": None, "tool_calls": [call]}]}).encode()

    rec, errors = check_line(line({"base": [10, 10.0], "unit": ["", "units"]}), tools, Schemas())
    assert rec is not None and rec["messages"][1]["tool_calls"][0]["acceptable"] == {"base": [10, 10.0], "unit": ["", "units"]}
    for bad in ({"base": [11]}, {"base": []}, {"base": 10}, {"unit": ["units"]}):
        rec, errors = check_line(line(bad), tools, Schemas())
        assert rec is None and [e["code"] for e in errors] == ["acceptable_malformed"], (bad, errors)
