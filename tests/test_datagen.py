"""Tests for data/customer_service/datagen.py and the committed data/customer_service files."""

from __future__ import annotations

import collections
import hashlib
import json
import re
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "customer_service"
FILES = ["tools.json", "train.jsonl", "eval.jsonl"]


def _load_generator():
    """The generator lives with its data (a script, not part of the package): import it from its file."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("datagen", DATA / "datagen.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["datagen"] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


datagen = _load_generator()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cs")
    hashes = datagen.write(out)  # default seed and sizes
    return out, hashes


@pytest.fixture(scope="module")
def tools() -> list[dict]:
    return json.loads((DATA / "tools.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {s: _load_jsonl(DATA / f"{s}.jsonl") for s in ("train", "eval")}


def _calls(conv: dict):
    for m in conv["messages"]:
        if m["role"] == "assistant" and m.get("tool_calls"):
            yield from m["tool_calls"]


def test_committed_files_are_reproducible(regenerated):
    out, hashes = regenerated
    assert sorted(hashes) == sorted(FILES)
    for name in FILES:
        assert hashes[name] == _sha(out / name), name
        assert (DATA / name).exists(), f"missing committed {name}"
        assert _sha(DATA / name) == hashes[name], f"{name} differs from a fresh `python data/customer_service/datagen.py`"


def test_generate_is_deterministic_and_seeded():
    a = datagen.generate(3, 60, 30)
    b = datagen.generate(3, 60, 30)
    c = datagen.generate(4, 60, 30)
    assert a == b
    assert a != c


def test_tools_schema(tools):
    assert tools == json.loads(json.dumps(datagen.TOOLS))
    names = [t["function"]["name"] for t in tools]
    assert len(names) == 15 and len(set(names)) == 15
    for t in tools:
        assert t["type"] == "function"
        fn = t["function"]
        assert fn["description"] and "\n" not in fn["description"] and len(fn["description"]) <= 60
        params = fn["parameters"]
        jsonschema.Draft202012Validator.check_schema(params)
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert set(params["required"]) <= set(params["properties"])


def test_conversation_structure_and_calls_validate(tools, splits):
    system = splits["train"][0]["messages"][0]
    assert system["role"] == "system" and system["content"] == datagen.SYSTEM_PROMPT
    for _split, rows in splits.items():
        for conv in rows:
            msgs = conv["messages"]
            assert set(conv) in ({"id", "kind", "messages"}, {"id", "kind", "tools", "messages"})
            listed = conv.get("tools", tools)  # no `tools`: the agent's whole list (data.tools)
            assert "tools" not in conv or conv["tools"] != tools, conv["id"]
            validators = {t["function"]["name"]: jsonschema.Draft202012Validator(t["function"]["parameters"])
                          for t in listed}
            assert len(validators) == len(listed), conv["id"]
            if conv["kind"].startswith("other_"):  # another domain's assistant: a general system prompt, or none
                assert msgs[0]["role"] == "user" or msgs[0]["content"] in datagen.GENERIC_SYSTEM_PROMPTS[1:]
            else:
                assert msgs[0] == system, conv["id"]
            turns = msgs[1:] if msgs[0]["role"] == "system" else msgs
            assert turns[0]["role"] == "user"
            assert msgs[-1]["role"] == "assistant", conv["id"]
            pending: dict[str, str] = {}
            ids: set[str] = set()
            for m in turns:
                if m["role"] == "assistant" and m.get("tool_calls"):
                    assert m["content"] is None
                    for tc in m["tool_calls"]:
                        assert tc["type"] == "function" and tc["id"].startswith("call_")
                        assert tc["id"] not in ids
                        ids.add(tc["id"])
                        name, args = tc["function"]["name"], tc["function"]["arguments"]
                        assert isinstance(args, dict)
                        assert name in validators, (conv["id"], name, "is not in the conversation's tools")
                        errs = list(validators[name].iter_errors(args))
                        assert not errs, (conv["id"], name, args, errs[0].message)
                        pending[tc["id"]] = name
                elif m["role"] == "tool":
                    assert pending.pop(m["tool_call_id"]) == m["name"]
                    assert isinstance(json.loads(m["content"]), dict)
                else:
                    assert m["role"] in ("user", "assistant")
                    assert isinstance(m["content"], str) and m["content"] == m["content"].strip()
                    assert m["content"]


def test_the_generator_checks_with_the_validators_checker(splits):
    """check_conversation runs pipeline.lib.conversations.check_line: an undeclared tool or arguments against
    the schema stop the generator."""
    import copy

    conv = next(c for c in splits["train"] if any(m.get("tool_calls") for m in c["messages"]))
    datagen.check_conversation(conv)
    undeclared = copy.deepcopy(conv)
    call = next(m for m in undeclared["messages"] if m.get("tool_calls"))["tool_calls"][0]
    call["function"]["name"] = "no_such_tool"
    with pytest.raises(AssertionError, match="tool_undeclared"):
        datagen.check_conversation(undeclared)
    wrong = copy.deepcopy(conv)
    next(m for m in wrong["messages"] if m.get("tool_calls"))["tool_calls"][0]["function"]["arguments"] = {"x": 1}
    with pytest.raises(AssertionError, match="arguments_schema"):
        datagen.check_conversation(wrong)


def test_tool_lists_vary_and_hold_what_is_needed(tools, splits):
    acme = [t["function"]["name"] for t in tools]
    for split, rows in splits.items():
        own = [c for c in rows if not c["kind"].startswith("other_") and c["kind"] != "tool_absent"]
        whole = sum("tools" not in c for c in own) / len(own)
        assert abs(whole - datagen.FULL_LIST_SHARE) < 0.06, (split, whole)
        orders = set()
        for c in own:
            if "tools" not in c:
                continue
            names = [t["function"]["name"] for t in c["tools"]]
            orders.add(tuple(n for n in names if n in acme) == tuple(n for n in acme if n in names))
            assert {tc["function"]["name"] for tc in _calls(c)} <= set(names)
            if c["kind"] == "missing_argument":  # the tool the question is for is listed even where no call follows
                assert set(names) & set(acme)
            if c["kind"] == "refusal":  # off-topic requests never sit beside another domain's tool
                assert set(names) <= set(acme), c["id"]
        assert orders == {True, False}, split  # subsets come both in the agent's order and shuffled
        absent = [c for c in rows if c["kind"] == "tool_absent"]
        assert absent
        for c in absent:
            names = {t["function"]["name"] for t in c["tools"]}
            reply = c["messages"][-1]["content"]
            missing = [n for n, cap in datagen.CAPABILITIES.items() if f"to {cap}" in reply or f"can't {cap}" in reply]
            assert len(missing) == 1 and missing[0] not in names, (c["id"], reply, names)
            assert not names & set(datagen.NEIGHBOURS[missing[0]])


def test_other_domains_are_held_out_whole(splits):
    def other_tools(rows):
        return {datagen.OTHER_BY_NAME[t["function"]["name"]]["names"][0]
                for c in rows for t in c.get("tools", []) if t["function"]["name"] in datagen.OTHER_BY_NAME}
    train, evals = other_tools(splits["train"]), other_tools(splits["eval"])
    assert len(train) >= 10 and len(evals) >= 3
    assert not train & evals  # eval's other-domain conversations call and list tools training never shows
    called = collections.Counter(tc["function"]["name"] for c in splits["train"] if c["kind"] == "other_call"
                                 for tc in _calls(c))
    assert len(called) >= 20  # several names per tool: a call copies its name from the list


def test_other_domains_list_namespaced_names_and_near_misses(splits):
    rows = splits["train"]
    calls = [tc["function"]["name"] for c in rows if c["kind"] == "other_call" for tc in _calls(c)]
    dotted = [n for n in calls if "." in n]
    assert 0.15 < len(dotted) / len(calls) < 0.45  # a `namespace.name` is called whole, as listed
    asks, near = 0, 0
    for c in rows:
        if c["kind"] != "other_irrelevant":
            continue
        asked = [t for t in datagen.OTHER_TOOLS for tpl in t["templates"]
                 if re.fullmatch(re.sub(r"\\{[a-z_0-9]+\\}", ".+", re.escape(tpl)), c["messages"][-2]["content"])]
        if not asked:
            continue  # an off-topic question (or a decorated request)
        listed = [datagen.OTHER_BY_NAME[t["function"]["name"]]["names"][0] for t in c["tools"]
                  if t["function"]["name"] in datagen.OTHER_BY_NAME]
        asks += 1
        near += len(listed) <= 2 and bool(set(listed) & set(datagen.OTHER_NEIGHBOURS[asked[0]["names"][0]]))
    # a request for a missing tool sits mostly beside one or two tools, one of them what it is mistaken for
    assert asks > 40 and near / asks > 0.3, (asks, near)


def test_every_tool_has_100_train_conversations(splits):
    counts = collections.Counter(n for c in splits["train"] for n in {tc["function"]["name"] for tc in _calls(c)})
    for name in datagen.TOOL_NAMES:
        assert counts[name] >= 100, (name, counts[name])


def test_kinds_ids_and_shares(splits):
    for split, rows in splits.items():
        ids = [c["id"] for c in rows]
        assert len(ids) == len(set(ids))
        assert all(i.startswith(f"cs-{split}-") for i in ids)
        kinds = collections.Counter(c["kind"] for c in rows)
        assert set(kinds) == set(datagen.KINDS), (split, kinds)
        for kind, share in datagen.KIND_SHARES:
            assert abs(kinds[kind] / len(rows) - share) < 0.03, (split, kind, kinds[kind])
    assert len(splits["train"]) == datagen.DEFAULT_TRAIN
    assert len(splits["eval"]) == datagen.DEFAULT_EVAL


def test_kind_semantics(splits):
    for rows in splits.values():
        for c in rows:
            msgs = c["messages"]
            calls = [m for m in msgs if m.get("tool_calls")]
            if c["kind"] in ("refusal", "tool_absent"):
                assert not calls and len(msgs) == 3
            elif c["kind"] == "other_irrelevant":
                assert not calls and msgs[-2]["role"] == "user" and len(msgs) <= 3
            elif c["kind"] == "other_call":
                assert len(calls) == 1 and msgs[-1] is calls[0] and calls[0]["tool_calls"][0]["function"]["name"] in {
                    t["function"]["name"] for t in c["tools"]}
            elif c["kind"] == "parallel":
                assert len(calls[0]["tool_calls"]) == 2
            elif c["kind"] == "missing_argument":
                assert msgs[2]["role"] == "assistant" and not msgs[2].get("tool_calls")
            elif c["kind"] == "tool_error":
                assert any("error" in json.loads(m["content"]) for m in msgs if m["role"] == "tool")
            elif c["kind"] == "multi_step":
                assert len(calls) >= 2
            else:
                assert c["kind"] == "single_call" and len(calls) == 1


def test_eval_is_held_out(splits):
    train_users = {m["content"] for c in splits["train"] for m in c["messages"] if m["role"] == "user"}
    for c in splits["eval"]:
        for m in c["messages"]:
            if m["role"] == "user":
                assert m["content"] not in train_users, (c["id"], m["content"])
    # argument values (order ids, emails, SKUs, ...) never seen in training
    def values(rows):
        return {json.dumps(v) for c in rows for tc in _calls(c)
                for k, v in tc["function"]["arguments"].items()
                if k in ("order_id", "email", "sku", "current_email", "new_email", "phone", "code")}
    assert not values(splits["train"]) & values(splits["eval"])


def _norm_text(s: str) -> str:
    # the validator's normalization (pipeline.lib.conversations.norm_text)
    return re.sub(r"\s+", " ", s.strip().lower())


def _messages_key(conv: dict) -> str:
    return _norm_text(json.dumps(conv["messages"], sort_keys=True, ensure_ascii=False))


def _first_user_key(conv: dict) -> str:
    return _norm_text(next(m["content"] for m in conv["messages"] if m["role"] == "user"))


def test_no_duplicate_conversations_within_or_across_splits(splits):
    # exact and case/whitespace-normalized duplicates, as the validator rejects them
    seen: dict[str, str] = {}
    for split in ("train", "eval"):
        for c in splits[split]:
            key = _messages_key(c)
            assert key not in seen, (c["id"], "duplicates", seen[key])
            seen[key] = c["id"]


def test_no_eval_first_user_turn_in_train(splits):
    train_first = {_first_user_key(c): c["id"] for c in splits["train"]}
    for c in splits["eval"]:
        key = _first_user_key(c)
        assert key not in train_first, (c["id"], "leaks", train_first[key])


@pytest.mark.parametrize("seed", [1, 2])
def test_generate_other_seeds_has_no_duplicates_or_leaks(seed):
    train, evals = datagen.generate(seed, 600, 200)
    keys = [_messages_key(c) for c in train + evals]
    assert len(keys) == len(set(keys))
    train_first = {_first_user_key(c) for c in train}
    assert not any(_first_user_key(c) in train_first for c in evals)
