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
    validators = {t["function"]["name"]: jsonschema.Draft202012Validator(t["function"]["parameters"])
                  for t in tools}
    system = splits["train"][0]["messages"][0]
    assert system["role"] == "system" and system["content"] == datagen.SYSTEM_PROMPT
    for _split, rows in splits.items():
        for conv in rows:
            msgs = conv["messages"]
            assert set(conv) == {"id", "kind", "messages"}
            assert msgs[0] == system, conv["id"]
            assert msgs[1]["role"] == "user"
            assert msgs[-1]["role"] == "assistant", conv["id"]
            pending: dict[str, str] = {}
            ids: set[str] = set()
            for m in msgs[1:]:
                if m["role"] == "assistant" and m.get("tool_calls"):
                    assert m["content"] is None
                    for tc in m["tool_calls"]:
                        assert tc["type"] == "function" and tc["id"].startswith("call_")
                        assert tc["id"] not in ids
                        ids.add(tc["id"])
                        name, args = tc["function"]["name"], tc["function"]["arguments"]
                        assert isinstance(args, dict)
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
            if c["kind"] == "refusal":
                assert not calls and len(msgs) == 3
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
    # the validator's normalization (pipeline.validate.norm_text)
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
