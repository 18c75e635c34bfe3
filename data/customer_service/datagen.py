"""Deterministic generator of the bundled customer-service tool-calling dataset.

Usage::

    python data/customer_service/datagen.py --out data/customer_service [--seed 0] [--train 3000] [--eval 400]

Writes ``tools.json`` (OpenAI tools list), ``train.jsonl`` and ``eval.jsonl``
(OpenAI chat format, one conversation per line; a line without ``tools`` sees
the agent's whole list, tools.json).  Generation uses only the
standard library (``random.Random(seed)``, ``json``, ``hashlib``); argument
validation uses ``jsonschema`` when it is installed, else a small built-in
validator that covers the schema features used here.

Held-out eval: every pool of phrasing templates (per intent) and of values
(names, cities, streets, products, email domains, discount-code words, issue
descriptions, ...) is split into disjoint train/eval parts by a fixed hash,
and generated values (order ids, SKUs, amounts, dates, phones, postal codes)
are assigned to a split by hashing the value itself.  Eval conversations are
therefore built from templates and values that training never uses.  Tools
of other domains are split whole: eval's other-domain conversations list and
call tools that training never shows.

What it draws from lives beside it: ``phrases.py`` (value pools, the users'
templates, the assistant's set replies), ``tools_def.py`` (the agent's tool
schemas and their validation, other domains' tools), ``pools.py`` (the
train/eval split and each split's values) and ``backend.py`` (what a call
returns, and the assistant's report of it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import random
import re
import string
import sys
from typing import Any

# The modules beside this file: it runs as a script and the tests load it from its path, so its
# folder need not be on sys.path; put it there for the imports below.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from backend import TODAY, _amount_value, _money, final_text, tool_result  # noqa: E402
from phrases import (ABSENT_REPLIES, ASKS, CATEGORY_WORDS, CONNECTORS, ERROR_TEMPLATES, FOLLOWUPS, GENERIC_SYSTEM_PROMPTS,  # noqa: E402
                     MISSING_TEMPLATES, MONTHS, MULTI_TEMPLATES, NONE_FIT_REPLIES, NUMBER_WORDS, PARALLEL_SAME_TEMPLATES, PREFIXES,
                     REFUSAL_PROMPTS, REFUSAL_REPLIES, REFUSAL_TOPICS, SINGLE_TEMPLATES, SIZE_WORDS, SUFFIXES)
from pools import Pools, split_list  # noqa: E402
from tools_def import (CAPABILITIES, NEIGHBOURS, OTHER_BY_NAME, OTHER_FIELD_ARGS, OTHER_NEIGHBOURS, OTHER_NUMBERS,  # noqa: E402
                       OTHER_TOOLS, OTHER_VALUES, REFUSAL_CONFLICTS, SCHEMAS, TOOL_BY_NAME, TOOL_NAMES, TOOLS, namespaced,
                       other_tool_schema, validate_call)

from pipeline.lib.conversations import Schemas, check_line  # noqa: E402  (tools_def puts the repository on the path)

SYSTEM_PROMPT = (
    "You are the support assistant for Acme Outfitters. Use the tools to help "
    "customers with orders, shipping, returns, refunds, accounts and products; "
    "ask for missing details; never invent order ids."
)

DEFAULT_TRAIN = 3000
DEFAULT_EVAL = 400
MIN_TRAIN_PER_TOOL = 100

KIND_SHARES: list[tuple[str, float]] = [
    ("single_call", 0.29),
    ("multi_step", 0.12),
    ("parallel", 0.10),
    ("missing_argument", 0.10),
    ("refusal", 0.10),
    ("tool_error", 0.08),
    ("other_call", 0.08),        # another domain's assistant calls a tool from its own list
    ("other_irrelevant", 0.09),  # ... and no listed tool fits: it says so
    ("tool_absent", 0.04),       # an Acme request whose tool is not in this conversation's list
]
FULL_LIST_SHARE = 0.7  # Acme conversations that see the agent's whole list, in order
NAMESPACED_SHARE = 0.3  # other domains' tools listed as `namespace.name` (tools_def.OTHER_NAMESPACES)
KINDS = [k for k, _ in KIND_SHARES]

# --------------------------------------------------------------------------
# Surface forms and slot filling
# --------------------------------------------------------------------------


def _amount_surface(rng: random.Random, cents: int) -> str:
    whole = cents % 100 == 0
    num = f"{cents // 100}" if whole and rng.random() < 0.6 else f"{cents / 100:.2f}"
    r = rng.random()
    if r < 0.65:
        return "$" + num
    if r < 0.8:
        return num + " dollars"
    if r < 0.9:
        return num + " USD"
    return num


def _date_surface(rng: random.Random, d: _dt.date) -> str:
    r = rng.random()
    if r < 0.6:
        return d.isoformat()
    if r < 0.85:
        return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


SlotResult = tuple[str, "str | None", Any]  # (surface text, argument name, argument value)


def _slot(name: str, pools: Pools, rng: random.Random, ctx: dict) -> SlotResult:
    """Produce (surface, arg_name, arg_value) for a template field."""
    if name == "order_id":
        v = pools.order_id(rng)
        r = rng.random()
        surf = v if r < 0.8 else ("ord-" + v[4:] if r < 0.92 else "Ord-" + v[4:])
        return surf, "order_id", v
    if name in ("amount", "max_price"):
        if name == "max_price":
            cents = pools.cents(rng, 2000, 60000) // 100 * 100 or 2000
            # whole dollars are the usual way to state a budget
            while not pools._ok(str(cents)):
                cents += 100
        else:
            cents = pools.cents(rng)
        return _amount_surface(rng, cents), name, _amount_value(cents)
    if name in ("email", "current_email", "new_email"):
        v = pools.email(rng)
        if rng.random() < 0.08:
            v = v[0].upper() + v[1:]
        return v, name, v
    if name == "street":
        v = pools.street(rng)
        return v, "street", v
    if name == "apartment":
        v = rng.choice([f"{rng.randrange(1, 40)}{rng.choice('ABCD')}", str(rng.randrange(1, 999))])
        return v, "apartment", v
    if name == "city":
        v = rng.choice(pools.cities)
        return v, "city", v
    if name == "postal_code":
        v = pools.postal(rng)
        return v, "postal_code", v
    if name == "query":
        if "product" not in ctx:
            ctx["product"] = pools.product(rng)
        return ctx["product"][0], "query", ctx["product"][0]
    if name == "category":
        if "product" not in ctx:
            ctx["product"] = pools.product(rng)
        cat = ctx["product"][1]
        return rng.choice(CATEGORY_WORDS[cat]), "category", cat
    if name == "sku":
        v = pools.sku(rng)
        surf = v if rng.random() < 0.85 else "sku-" + v[4:]
        return surf, "sku", v
    if name == "size":
        v = rng.choice(list(SIZE_WORDS))
        return rng.choice(SIZE_WORDS[v]), "size", v
    if name == "code":
        v = pools.code(rng)
        surf = v if rng.random() < 0.7 else (v.lower() if rng.random() < 0.7 else v.capitalize())
        return surf, "code", v
    if name in ("limit", "quantity"):
        v = rng.randrange(2, 11) if name == "limit" else rng.randrange(2, 7)
        surf = NUMBER_WORDS[v] if rng.random() < 0.35 else str(v)
        return surf, name, v
    if name in ("since", "date"):
        if name == "since":
            d = pools.date(rng, _dt.date(2024, 1, 1), 500)
        else:
            d = pools.date(rng, TODAY, 365)
        return _date_surface(rng, d), name, d.isoformat()
    if name == "phone":
        v = pools.phone_digits(rng)
        r = rng.random()
        if r < 0.5:
            return v, "phone", v
        if r < 0.75:
            return f"{v[:3]}-{v[3:6]}-{v[6:]}", "phone", v
        return "+1" + v, "phone", "+1" + v
    if name == "time_window":
        v = ctx.pop("force_time_window", None) or rng.choice(list(pools.time_windows))
        return rng.choice(pools.time_windows[v]), "time_window", v
    if name == "return_reason":
        v = rng.choice(list(pools.return_reasons))
        return rng.choice(pools.return_reasons[v]), "reason", v
    if name == "cancel_reason":
        v = rng.choice(list(pools.cancel_reasons))
        return rng.choice(pools.cancel_reasons[v]), "reason", v
    if name == "refund_reason":
        v = rng.choice(list(pools.refund_reasons))
        return rng.choice(pools.refund_reasons[v]), "reason", v
    if name == "refund_method":
        v = rng.choice(list(pools.refund_methods))
        return rng.choice(pools.refund_methods[v]), "refund_method", v
    if name == "method":
        v = rng.choice(list(pools.reset_methods))
        return rng.choice(pools.reset_methods[v]), "method", v
    if name == "priority":
        v = rng.choice(list(pools.priorities))
        return rng.choice(pools.priorities[v]), "priority", v
    if name == "issue":
        phrase, summary = rng.choice(pools.issues)
        return phrase, "summary", summary
    if name == "name":
        f, _ = pools.name(rng)
        return f.capitalize(), None, None
    raise KeyError(name)


_FORMATTER = string.Formatter()
_PROTECTED = {"ORD", "SKU"}


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    op = rng.randrange(3)
    if op == 0:  # swap
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:  # drop
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double


def render(template: str, pools: Pools, rng: random.Random, ctx: dict | None = None,
           noise: bool = True) -> tuple[str, dict[str, tuple]]:
    """Fill a template: noise (typos, casing, punctuation) touches only the literal
    text, never the slot values.  Returns (text, {field: (arg_name, value)})."""
    ctx = {} if ctx is None else ctx
    parts = list(_FORMATTER.parse(template))
    literals = [p[0] for p in parts]
    if noise:
        r = rng.random()
        if r < 0.14:
            literals = [s.lower() for s in literals]
        elif r < 0.17:
            literals = [s.upper() for s in literals]
        if rng.random() < 0.15:
            cands = [(i, j) for i, s in enumerate(literals)
                     for j, w in enumerate(s.split(" "))
                     if len(w) >= 4 and w.isalpha() and w not in _PROTECTED]
            if cands:
                i, j = rng.choice(cands)
                words = literals[i].split(" ")
                words[j] = _typo(words[j], rng)
                literals[i] = " ".join(words)
        last = len(parts) - 1
        if parts[last][1] is None and literals[last][-1:] in ".!" and rng.random() < 0.2:
            literals[last] = literals[last][:-1]
    out: list[str] = []
    vals: dict[str, tuple] = {}
    for (_lit, field, _spec, _conv), lit2 in zip(parts, literals):
        out.append(lit2)
        if field is None:
            continue
        base = field[:-2] if field.endswith("_b") else field
        sub = ctx.setdefault("_b", {}) if field.endswith("_b") else ctx
        for _ in range(50):
            surf, arg, val = _slot(base, pools, rng, sub)
            if not field.endswith("_b") or val is None or val != vals.get(base, (None, None))[1]:
                break
        vals[field] = (arg, val)
        out.append(surf)
    text = "".join(out).strip()
    assert text == text.strip() and "  " not in text, text
    return text, vals


def args_from(tool: str, vals: dict[str, tuple], suffix: str = "", fixed: dict | None = None) -> dict:
    """Collect tool arguments from slot values (fields with the given suffix)."""
    got: dict[str, Any] = {}
    for field, (arg, val) in vals.items():
        if arg is None:
            continue
        has_b = field.endswith("_b")
        if (suffix == "_b") != has_b:
            continue
        got[arg] = val
    if fixed:
        got.update(fixed)
    props = SCHEMAS[tool]["properties"]
    args = {k: got[k] for k in props if k in got}
    validate_call(tool, args)
    return args


def _other_slot(tool: dict, field: str, pools: Pools, rng: random.Random, ctx: dict) -> tuple[str, str, Any]:
    """(surface, argument, value) for a field of an other-domain template."""
    params = tool["params"]
    if field == "city":
        arg = next(a for a in ("city", "origin", "location") if a in params)
    else:
        arg = field if field in params else OTHER_FIELD_ARGS[field]
    if field in ("city", "city2"):
        v = rng.choice([c for c in pools.cities if c != ctx.get("city")])
        ctx[field] = v
        return v, arg, v
    if field == "to_currency":
        v = rng.choice([c for c in OTHER_VALUES["from_currency"] if c != ctx.get("from_currency")])
        return v, arg, v
    if field == "to_scale":
        v = rng.choice([c for c in OTHER_VALUES["from_scale"] if c != ctx.get("from_scale")])
        return v, arg, v
    if field in OTHER_NUMBERS:
        lo, hi = OTHER_NUMBERS[field]
        v = rng.randrange(lo, hi)
        return str(v), arg, v
    if field in OTHER_VALUES:
        v = rng.choice(OTHER_VALUES[field])
        ctx[field] = v
        return v, arg, v
    if field in ("base", "height", "weight"):
        lo, hi = {"base": (2, 60), "height": (140, 205), "weight": (45, 130)}[field]
        if field == "height" and "height" in params:  # a triangle's, not a person's
            lo, hi = 2, 60
        v = rng.randrange(lo, hi)
        return str(v), arg, v
    if field in ("amount", "principal"):
        v = rng.choice([rng.randrange(5, 1000), rng.randrange(10, 200) * 50])
        return f"{v:,}" if v >= 10000 else str(v), arg, v
    if field == "rate":
        v = rng.choice([0.02, 0.025, 0.03, 0.04, 0.045, 0.05, 0.06, 0.07, 0.08])
        return str(v), arg, v
    if field in ("years", "nights", "minutes"):
        v = rng.randrange(2, 31) if field == "years" else (rng.randrange(1, 10) if field == "nights" else rng.choice([15, 20, 30, 45, 60]))
        return str(v), arg, v
    if field == "year":
        v = rng.randrange(1960, 2024)
        return str(v), arg, v
    if field in ("a", "b"):
        k = rng.randrange(2, 13)
        v = k * rng.randrange(2, 40)
        return str(v), arg, v
    if field == "flight":
        v = f"{rng.choice(['UA', 'DL', 'AA', 'BA', 'LH', 'AF', 'WN', 'AC'])}{rng.randrange(10, 2999)}"
        return v, arg, v
    if field == "date":
        d = pools.date(rng, TODAY, 300)
        return _date_surface(rng, d), arg, d.isoformat()
    raise KeyError(field)


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# --------------------------------------------------------------------------
# Conversation builder
# --------------------------------------------------------------------------


class Conv:
    def __init__(self, rng: random.Random, system: str | None = SYSTEM_PROMPT):
        self.rng = rng
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self._ids: set[str] = set()
        self.tools: list[dict] | None = None  # this conversation's list (None: the agent's whole list)
        self.needed: set[str] = set()  # Acme tools its list must hold besides the ones it calls

    def user(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})

    def say(self, text: str) -> None:
        self.messages.append({"role": "assistant", "content": text})

    def _new_id(self) -> str:
        while True:
            cid = "call_" + "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(9))
            if cid not in self._ids:
                self._ids.add(cid)
                return cid

    def call(self, *calls: tuple[str, dict]) -> list[str]:
        tcs, ids = [], []
        for name, args in calls:
            validate_call(name, args)
            cid = self._new_id()
            ids.append(cid)
            tcs.append({"id": cid, "type": "function", "function": {"name": name, "arguments": args}})
        self.messages.append({"role": "assistant", "content": None, "tool_calls": tcs})
        return ids

    def result(self, call_id: str, name: str, content: dict) -> None:
        self.messages.append({"role": "tool", "tool_call_id": call_id, "name": name,
                              "content": json.dumps(content, ensure_ascii=False)})


class Generator:
    def __init__(self, split: str, rng: random.Random):
        self.split = split
        self.rng = rng
        self.pools = Pools(split)
        sl = lambda key, items: split_list(key, items, split)  # noqa: E731
        self.single = {t: sl("single:" + t, v) for t, v in SINGLE_TEMPLATES.items()}
        self.par_same = {t: sl("parsame:" + t, v) for t, v in PARALLEL_SAME_TEMPLATES.items()}
        self.missing = {t: sl("missing:" + t, v) for t, v in MISSING_TEMPLATES.items()}
        self.followups = {g: sl("followup:" + g, v) for g, v in FOLLOWUPS.items()}
        self.multi = {k: sl("multi:" + k, v) for k, v in MULTI_TEMPLATES.items()}
        self.errors = {k: sl("error:" + k, v) for k, v in ERROR_TEMPLATES.items()}
        self.refusals = {k: sl("refusal:" + k, v) for k, v in REFUSAL_PROMPTS.items()}
        self.connectors = sl("connector", CONNECTORS)
        self.prefixes = sl("prefix", PREFIXES)
        self.suffixes = sl("suffix", SUFFIXES)
        self.single_cycle: list[str] = []
        self.pair_cycle: list[str] = []
        self.missing_cycle: list[str] = []
        self.absent_cycle: list[str] = []
        # Other domains' tools are split whole: eval calls tools that training never shows.
        self.other = [OTHER_BY_NAME[n] for n in split_list("other_tool", [t["names"][0] for t in OTHER_TOOLS], split)]

    # helpers ----------------------------------------------------------------
    def _next(self, cycle_name: str, items: list[str]) -> str:
        cyc = getattr(self, cycle_name)
        if not cyc:
            cyc.extend(items)
            self.rng.shuffle(cyc)
        return cyc.pop()

    def decorate(self, core: str, prefix: bool = True, suffix: bool = True) -> str:
        """Optionally add a greeting prefix / thanks suffix around a template."""
        rng = self.rng
        if prefix and rng.random() < 0.25:
            pre = rng.choice(self.prefixes)
            if pre.endswith(",") and core[:1].isalpha() and not (core.startswith("I ") or core.startswith("I'")):
                core = core[0].lower() + core[1:]
            core = pre + " " + core
        if suffix and rng.random() < 0.18:
            core = core + " " + rng.choice(self.suffixes)
        return core

    def user_turn(self, conv: Conv, template: str, ctx: dict | None = None,
                  decorate: bool = True) -> dict[str, tuple]:
        text, vals = render(self.decorate(template) if decorate else template, self.pools, self.rng, ctx)
        conv.user(text)
        return vals

    def finish(self, conv: Conv, tool: str, args: dict, cid: str, ctx: dict | None = None) -> dict:
        res = tool_result(tool, args, self.pools, self.rng, ctx or {})
        conv.result(cid, tool, res)
        conv.say(final_text(tool, args, res, self.rng))
        return res

    def call_ok(self, conv: Conv, tool: str, args: dict, ctx: dict | None = None) -> dict:
        """Call ``tool`` and append a successful result; return the result."""
        (cid,) = conv.call((tool, args))
        res = tool_result(tool, args, self.pools, self.rng, ctx or {})
        conv.result(cid, tool, res)
        return res

    # kinds -------------------------------------------------------------------
    def single_call(self) -> Conv:
        conv = Conv(self.rng)
        tool = self._next("single_cycle", TOOL_NAMES)
        template, fixed = self.rng.choice(self.single[tool])
        vals = self.user_turn(conv, template)
        args = args_from(tool, vals, fixed=fixed)
        (cid,) = conv.call((tool, args))
        if self.rng.random() < 0.7:
            self.finish(conv, tool, args, cid)
        return conv

    def parallel(self) -> Conv:
        conv = Conv(self.rng)
        rng = self.rng
        if rng.random() < 0.5:
            tool = rng.choice(sorted(self.par_same))
            vals = self.user_turn(conv, rng.choice(self.par_same[tool]))
            calls = [(tool, args_from(tool, vals)), (tool, args_from(tool, vals, suffix="_b"))]
        else:
            t1 = self._next("pair_cycle", TOOL_NAMES)
            t2 = self._next("pair_cycle", TOOL_NAMES)
            while t2 == t1:
                t2 = rng.choice(TOOL_NAMES)
            (a, fa), (b, fb) = rng.choice(self.single[t1]), rng.choice(self.single[t2])
            conn = rng.choice(self.connectors)
            if b[:1].isalpha() and not (b.startswith("I ") or b.startswith("I'")):
                b = b[0].lower() + b[1:]
            ctx1: dict = {}
            ctx2: dict = {}
            text1, v1 = render(self.decorate(a, suffix=False), self.pools, rng, ctx1)
            text2, v2 = render(self.decorate(b, prefix=False), self.pools, rng, ctx2, noise=rng.random() < 0.5)
            if text1[-1:] not in ".?!":
                text1 += "."
            conv.user(f"{text1} {conn} {text2}")
            calls = [(t1, args_from(t1, v1, fixed=fa)), (t2, args_from(t2, v2, fixed=fb))]
        ids = conv.call(*calls)
        if rng.random() < 0.15:
            return conv  # ends at the parallel call
        texts = []
        for (tool, args), cid in zip(calls, ids):
            res = tool_result(tool, args, self.pools, rng, {})
            conv.result(cid, tool, res)
            texts.append(final_text(tool, args, res, rng))
        conv.say(" ".join(texts))
        return conv

    def missing_argument(self) -> Conv:
        conv = Conv(self.rng)
        rng = self.rng
        tool = self._next("missing_cycle", TOOL_NAMES)
        template, group = rng.choice(self.missing[tool])
        ctx: dict = {}
        vals = self.user_turn(conv, template, ctx)
        conv.say(rng.choice(ASKS[group]))
        conv.needed.add(tool)
        if rng.random() < 0.35:
            return conv  # ends with the clarifying question
        f_text, f_vals = render(rng.choice(self.followups[group]), self.pools, rng, ctx,
                                noise=rng.random() < 0.5)
        conv.user(f_text)
        vals = {**vals, **f_vals}
        args = args_from(tool, vals)
        (cid,) = conv.call((tool, args))
        if rng.random() < 0.7:
            self.finish(conv, tool, args, cid)
        return conv

    def refusal(self) -> Conv:
        conv = Conv(self.rng)
        rng = self.rng
        cat = rng.choice(sorted(self.refusals))
        prompt = rng.choice(self.refusals[cat])
        text, _ = render(self.decorate(prompt), self.pools, rng)
        conv.user(text)
        conv.say(rng.choice(REFUSAL_REPLIES).format(topic=REFUSAL_TOPICS[cat]))
        return conv

    def multi_step(self) -> Conv:
        conv = Conv(self.rng)
        rng = self.rng
        scen = rng.choice(sorted(self.multi))
        ctx: dict = {}
        vals = self.user_turn(conv, rng.choice(self.multi[scen]), ctx)
        if scen.startswith("status_"):
            self._status_then(conv, scen, vals)
        elif scen == "list_track":
            self._latest_then_track(conv, vals)
        elif scen == "search_availability":
            self._search_then_stock(conv, vals)
        elif scen in ("account_update", "account_reset"):
            self._account_then(conv, scen, vals)
        else:
            raise KeyError(scen)
        return conv

    def _status_then(self, conv: Conv, scen: str, vals: dict[str, tuple]) -> None:
        """Check the order, which has the status the request hinges on, then do what was asked."""
        oid = vals["order_id"][1]
        want = {"status_refund": "delivered", "status_track": "shipped", "status_cancel": "processing",
                "status_return": "delivered", "status_discount": "processing"}[scen]
        rctx: dict = {"status": want}
        if scen == "status_refund":
            rctx["total_at_least"] = vals["amount"][1]
        sres = self.call_ok(conv, "check_order_status", {"order_id": oid}, rctx)
        tool = {"status_refund": "submit_refund", "status_track": "track_shipment",
                "status_cancel": "cancel_order", "status_return": "initiate_return",
                "status_discount": "apply_discount_code"}[scen]
        args = args_from(tool, vals)
        res = self.call_ok(conv, tool, args)
        lead = {"delivered": f"Order {oid} was delivered on {sres.get('delivered_on')}.",
                "shipped": f"Order {oid} has shipped.",
                "processing": f"Order {oid} was still processing."}[want]
        conv.say(lead + " " + final_text(tool, args, res, self.rng))

    def _latest_then_track(self, conv: Conv, vals: dict[str, tuple]) -> None:
        """List the orders of an email, then track the latest (which has shipped)."""
        lres = self.call_ok(conv, "list_recent_orders", args_from("list_recent_orders", vals), {"first_status": "shipped"})
        latest = lres["orders"][0]["order_id"]
        t_args = {"order_id": latest}
        res = self.call_ok(conv, "track_shipment", t_args)
        conv.say(f"Your latest order is {latest}. " + final_text("track_shipment", t_args, res, self.rng))

    def _search_then_stock(self, conv: Conv, vals: dict[str, tuple]) -> None:
        """Search the catalog, then check the stock of the top result in the size asked for."""
        sres = self.call_ok(conv, "search_products", args_from("search_products", vals))
        top = sres["results"][0]
        a_args = {"sku": top["sku"], "size": vals["size"][1]}
        res = self.call_ok(conv, "check_product_availability", a_args)
        conv.say(f"The best match is the {top['name']} at {_money(top['price'])}. "
                 + final_text("check_product_availability", a_args, res, self.rng))

    def _account_then(self, conv: Conv, scen: str, vals: dict[str, tuple]) -> None:
        """Find the account, then change its email or send a password reset."""
        email = vals["current_email" if scen == "account_update" else "email"][1]
        gres = self.call_ok(conv, "get_account_details", args_from("get_account_details", {"email": ("email", email)}))
        tool = "update_account_email" if scen == "account_update" else "reset_password"
        args = args_from(tool, vals)
        res = self.call_ok(conv, tool, args)
        conv.say(f"I found your account, {gres['name'].split()[0]}. " + final_text(tool, args, res, self.rng))

    def tool_error(self) -> Conv:
        conv = Conv(self.rng)
        mode = self.rng.choice(["alt_order", "alt_email", "alt_code", "alt_window", "transient", "transient",
                                "refund_review", "refund_cap", "cancel_shipped", "address_shipped"])
        if mode.startswith("alt_"):
            self._error_then_alternative(conv, mode)
        elif mode == "transient":
            self._error_then_retry(conv)
        elif mode in ("refund_review", "refund_cap"):
            self._refund_refused(conv, mode)
        else:
            self._already_shipped(conv, mode)
        return conv

    def _error_then_alternative(self, conv: Conv, mode: str) -> None:
        """The user gives two values; the first fails, the call is repeated with the second."""
        rng = self.rng
        ctx: dict = {}
        vals = self.user_turn(conv, rng.choice(self.errors[mode]), ctx)
        tool = {"alt_order": rng.choice(["check_order_status", "track_shipment"]),
                "alt_email": "get_account_details", "alt_code": "apply_discount_code",
                "alt_window": "schedule_callback"}[mode]
        first = args_from(tool, vals)
        second = dict(first)
        second.update(args_from(tool, {**vals, **{k[:-2]: v for k, v in vals.items() if k.endswith("_b")}}))
        assert first != second
        err = {
            "alt_order": {"error": "order_not_found", "message": f"No order found with id {first.get('order_id')}."},
            "alt_email": {"error": "account_not_found", "message": f"No account registered to {first.get('email')}."},
            "alt_code": {"error": "code_expired", "message": f"Code {first.get('code')} has expired."},
            "alt_window": {"error": "no_availability",
                           "message": f"No {first.get('time_window')} slots on {first.get('date')}."},
        }[mode]
        (cid,) = conv.call((tool, first))
        conv.result(cid, tool, err)
        res = self.call_ok(conv, tool, second)
        why = {"alt_order": f"I couldn't find {first.get('order_id')}, but the other number worked.",
               "alt_email": f"There's no account under {first.get('email')}, but I found one under {second.get('email')}.",
               "alt_code": f"{first.get('code')} has expired, so I used {second.get('code')} instead.",
               "alt_window": f"The {first.get('time_window')} was full, so I booked the {second.get('time_window')}."}[mode]
        conv.say(why + " " + final_text(tool, second, res, rng))

    def _error_then_retry(self, conv: Conv) -> None:
        """A temporary outage: the same call again succeeds."""
        rng = self.rng
        tool = rng.choice(["check_order_status", "track_shipment", "search_products", "get_account_details",
                           "list_recent_orders", "check_product_availability", "submit_refund",
                           "reset_password"])
        template, fixed = rng.choice(self.single[tool])
        vals = self.user_turn(conv, template)
        args = args_from(tool, vals, fixed=fixed)
        (cid,) = conv.call((tool, args))
        conv.result(cid, tool, {"error": "service_unavailable",
                                "message": "Temporary outage, please retry.", "retryable": True})
        (cid2,) = conv.call((tool, args))
        self.finish(conv, tool, args, cid2)

    def _refund_refused(self, conv: Conv, mode: str) -> None:
        """A refund over the order's total is retried at the maximum; one that needs review goes to a human."""
        rng = self.rng
        template, fixed = rng.choice(self.single["submit_refund"])
        vals = self.user_turn(conv, template)
        args = args_from("submit_refund", vals, fixed=fixed)
        (cid,) = conv.call(("submit_refund", args))
        amount = args["amount"]
        if mode == "refund_cap" and amount >= 5:
            cap_cents = rng.randrange(max(100, int(amount * 100) // 4), int(amount * 100))
            cap = _amount_value(cap_cents)
            conv.result(cid, "submit_refund", {"error": "amount_exceeds_order_total",
                                               "message": f"Order total is {_money(cap)}.",
                                               "max_refundable": cap})
            args2 = dict(args)
            args2["amount"] = cap
            res = self.call_ok(conv, "submit_refund", args2)
            conv.say(f"{_money(amount)} is more than the order total, so I refunded the maximum of "
                     f"{_money(cap)}. " + final_text("submit_refund", args2, res, rng))
            return
        conv.result(cid, "submit_refund", {"error": "requires_manual_review",
                                           "message": "This refund needs approval from a specialist."})
        e_args = {"summary": f"Refund of {_money(amount)} on {args['order_id']} needs manual review",
                  "priority": "normal", "order_id": args["order_id"]}
        res = self.call_ok(conv, "escalate_to_human", e_args)
        conv.say("That refund needs a specialist's approval. " + final_text("escalate_to_human", e_args, res, rng))

    def _already_shipped(self, conv: Conv, mode: str) -> None:
        """Cancelling or redirecting a shipped order fails: the case goes to a human."""
        rng = self.rng
        tool = "cancel_order" if mode == "cancel_shipped" else "update_shipping_address"
        template, fixed = rng.choice(self.single[tool])
        vals = self.user_turn(conv, template)
        args = args_from(tool, vals, fixed=fixed)
        (cid,) = conv.call((tool, args))
        conv.result(cid, tool, {"error": "order_already_shipped",
                                "message": f"Order {args['order_id']} has already shipped."})
        what = "cancel" if tool == "cancel_order" else "change the address of"
        e_args = {"summary": f"Customer wants to {what} {args['order_id']} but it already shipped",
                  "priority": rng.choice(["normal", "high"]), "order_id": args["order_id"]}
        res = self.call_ok(conv, "escalate_to_human", e_args)
        conv.say(f"Order {args['order_id']} has already shipped, so I can't {what} it myself. "
                 + final_text("escalate_to_human", e_args, res, rng))

    # other domains and tool lists ------------------------------------------
    def _other_schema(self, tool: dict) -> dict:
        name = self.rng.choice(tool["names"])
        if self.rng.random() < NAMESPACED_SHARE:
            name = namespaced(tool, name)
        return other_tool_schema(tool, name)

    def _other_request(self, tool: dict) -> tuple[str, dict]:
        """A user request for an other-domain tool: (text, arguments)."""
        ctx: dict = {}
        template = self.decorate(self.rng.choice(tool["templates"]))
        out, args = [], {}
        for lit, field, _spec, _conv in _FORMATTER.parse(template):
            out.append(lit)
            if field == "name":  # a greeting's name, no argument
                surf, _, _ = _slot(field, self.pools, self.rng, ctx)
                out.append(surf)
            elif field is not None:
                surf, arg, val = _other_slot(tool, field, self.pools, self.rng, ctx)
                out.append(surf)
                args[arg] = val
        return "".join(out), args

    def _acme_sample(self, exclude: set[str], k: int) -> list[str]:
        names = [t for t in TOOL_NAMES if t not in exclude]
        return self.rng.sample(names, min(k, len(names)))

    def other_call(self) -> Conv:
        rng = self.rng
        conv = Conv(rng, rng.choice(GENERIC_SYSTEM_PROMPTS))
        tool = rng.choice(self.other)
        schema = self._other_schema(tool)
        text, args = self._other_request(tool)
        conv.user(text)
        conv.call((schema["function"]["name"], {k: args[k] for k in tool["params"] if k in args}))
        pool = [t for t in self.other if t is not tool]
        others = rng.sample(pool, min(len(pool), rng.randrange(0, 4)))
        near = [t for t in pool if t["names"][0] in OTHER_NEIGHBOURS[tool["names"][0]] and t not in others]
        if near and rng.random() < 0.4:  # the tool it is mistaken for sits beside it
            others.append(rng.choice(near))
        tools = [schema] + [self._other_schema(t) for t in others]
        if rng.random() < 0.3:
            tools += [TOOL_BY_NAME[n] for n in self._acme_sample(set(), rng.randrange(1, 4))]
        rng.shuffle(tools)
        conv.tools = tools
        return conv

    def other_irrelevant(self) -> Conv:
        rng = self.rng
        conv = Conv(rng, rng.choice(GENERIC_SYSTEM_PROMPTS))
        if rng.random() < 0.5:  # an off-topic question no tool answers
            cat = rng.choice(sorted(self.refusals))
            text, _ = render(self.decorate(rng.choice(self.refusals[cat])), self.pools, rng)
            pool = [t for t in self.other if t["names"][0] not in REFUSAL_CONFLICTS.get(cat, ())]
            listed = rng.sample(pool, min(len(pool), rng.randrange(1, 5)))
        else:  # a request for a tool that is not in the list, most often beside a tool it is mistaken for
            wanted = rng.choice(self.other)
            text, _ = self._other_request(wanted)
            pool = [t for t in self.other if t is not wanted]
            near = [t for t in pool if t["names"][0] in OTHER_NEIGHBOURS[wanted["names"][0]]]
            if near and rng.random() < 0.7:
                listed = [rng.choice(near)]
                rest = [t for t in pool if t is not listed[0]]
                listed += rng.sample(rest, rng.choice([0, 0, 1, 2]))
            else:
                listed = rng.sample(pool, min(len(pool), rng.randrange(1, 5)))
        conv.user(text)
        tools = [self._other_schema(t) for t in listed]
        caps = [t["does"] for t in listed]
        if not listed or rng.random() < 0.3:
            acme = self._acme_sample(set(), rng.randrange(1, 3))
            tools += [TOOL_BY_NAME[n] for n in acme]
            caps += [CAPABILITIES[n] for n in acme]
        rng.shuffle(tools)
        conv.tools = tools
        conv.say(rng.choice(NONE_FIT_REPLIES).format(caps=_join(caps)))
        return conv

    def tool_absent(self) -> Conv:
        rng = self.rng
        conv = Conv(rng)
        tool = self._next("absent_cycle", TOOL_NAMES)
        template, _fixed = rng.choice(self.single[tool])
        self.user_turn(conv, template)
        listed = self._acme_sample({tool, *NEIGHBOURS[tool]}, rng.randrange(3, 9))
        conv.tools = [TOOL_BY_NAME[n] for n in sorted(listed, key=TOOL_NAMES.index)]
        if rng.random() < 0.5:
            rng.shuffle(conv.tools)
        caps = [CAPABILITIES[n] for n in rng.sample(listed, min(3, len(listed)))]
        conv.say(rng.choice(ABSENT_REPLIES).format(cap=CAPABILITIES[tool], caps=_join(caps)))
        return conv

    def assign_tools(self, conv: Conv, kind: str) -> list[dict] | None:
        """This conversation's tool list: None (the agent's whole list, in order) or a shuffled subset that
        holds the tools it calls or asks about, most of their neighbours, a few others, and, outside
        refusals, sometimes other domains' tools."""
        if conv.tools is not None:
            return conv.tools
        rng = self.rng
        if rng.random() < FULL_LIST_SHARE:
            return None
        needed = set(tools_used({"messages": conv.messages})) | conv.needed
        names = set(needed)
        for t in sorted(needed):
            names.update(n for n in NEIGHBOURS[t] if rng.random() < 0.7)
        names.update(self._acme_sample(names, rng.randrange(1, 6)))
        tools = [TOOL_BY_NAME[n] for n in TOOL_NAMES if n in names]
        if kind != "refusal" and rng.random() < 0.35:
            tools += [self._other_schema(t) for t in rng.sample(self.other, rng.randrange(1, 4))]
        rng.shuffle(tools)
        return tools

    def make(self, kind: str) -> tuple[Conv, list[dict] | None]:
        conv = getattr(self, kind)()
        return conv, self.assign_tools(conv, kind)


def _kind_plan(n: int, rng: random.Random) -> list[str]:
    counts = {k: int(round(n * s)) for k, s in KIND_SHARES}
    counts["single_call"] += n - sum(counts.values())
    if n >= len(KINDS):  # every kind present
        for k in KINDS:
            if counts[k] == 0:
                counts[k] = 1
                counts["single_call"] -= 1
    plan = [k for k in KINDS for _ in range(counts[k])]
    rng.shuffle(plan)
    return plan


def _user_texts(conv: dict) -> list[str]:
    return [m["content"] for m in conv["messages"] if m["role"] == "user"]


def tools_used(conv: dict) -> list[str]:
    names = {tc["function"]["name"] for m in conv["messages"] if m.get("tool_calls")
             for tc in m["tool_calls"]}
    return sorted(names)


def check_conversation(conv: dict) -> None:
    msgs = conv["messages"]
    listed = [t["function"]["name"] for t in conv.get("tools", TOOLS)]
    assert len(listed) == len(set(listed)), listed
    acme = conv["kind"] not in ("other_call", "other_irrelevant")
    if acme:
        assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    else:
        assert msgs[0]["role"] == "user" or msgs[0]["content"] in GENERIC_SYSTEM_PROMPTS
    assert msgs[-1]["role"] == "assistant"
    if conv["kind"] in ("other_irrelevant", "tool_absent"):
        assert len(msgs) == (msgs[0]["role"] == "system") + 2 and msgs[-1]["content"]
    # the validator's own checker: roles and order, every call declared in the line's list and valid against
    # its schema, every result answering a pending call by id and name
    record, problems = check_line(json.dumps(conv, ensure_ascii=False).encode(), TOOLS, _SCHEMAS)
    assert record is not None, (conv["id"], problems)
    ids = [tc["id"] for m in msgs for tc in m.get("tool_calls") or []]
    assert len(ids) == len(set(ids)), conv["id"]  # the generator never reuses an id, even after its answer
    for m in msgs:
        if m["role"] == "assistant" and m.get("tool_calls"):
            assert m["content"] is None
        elif m["role"] == "tool":
            json.loads(m["content"])
        elif m["role"] != "system":
            assert isinstance(m["content"], str) and m["content"]


_SCHEMAS = Schemas()


def _norm_text(s: str) -> str:
    """Lowercase, collapse whitespace, strip (the validator's text normalization)."""
    return re.sub(r"\s+", " ", s.strip().lower())


def messages_key(messages: list[dict]) -> str:
    """Normalized dump of ``messages``: two conversations with equal keys are duplicates."""
    return _norm_text(json.dumps(messages, sort_keys=True, ensure_ascii=False))


def first_user_key(conv: dict) -> str:
    """Normalized first user turn (the validator's eval-leak key)."""
    return _norm_text(next((m["content"] for m in conv["messages"] if m["role"] == "user"), ""))


def _gen_split(split: str, n: int, rng: random.Random, seen: set[str],
               forbidden: set[str] | None = None) -> list[dict]:
    """Generate ``n`` conversations, resampling any whose normalized ``messages``
    dump is already in ``seen`` (shared across splits, updated in place) or
    whose normalized user turns are in ``forbidden``."""
    gen = Generator(split, rng)
    out = []
    for i, kind in enumerate(_kind_plan(n, rng), 1):
        for _attempt in range(1000):
            made, tools = gen.make(kind)
            conv = {"id": f"cs-{split}-{i:06d}", "kind": kind, **({"tools": tools} if tools is not None else {}),
                    "messages": made.messages}
            if messages_key(conv["messages"]) in seen:
                continue
            if forbidden and any(_norm_text(t) in forbidden for t in _user_texts(conv)):
                continue
            break
        else:  # pragma: no cover
            raise RuntimeError(f"could not generate a new {kind} conversation for {split}")
        check_conversation(conv)
        seen.add(messages_key(conv["messages"]))
        out.append(conv)
    return out


def tool_counts(convs: list[dict]) -> dict[str, int]:
    counts = {t: 0 for t in TOOL_NAMES}
    for c in convs:
        for t in tools_used(c):
            if t in counts:  # the agent's own tools
                counts[t] += 1
    return counts


def generate(seed: int = 0, n_train: int = DEFAULT_TRAIN, n_eval: int = DEFAULT_EVAL) -> tuple[list[dict], list[dict]]:
    """Generate (train, eval) conversations deterministically from ``seed``."""
    seen: set[str] = set()  # normalized messages dumps, across both splits
    train = _gen_split("train", n_train, random.Random(f"tooltune-cs-{seed}-train"), seen)
    forbidden = {_norm_text(t) for c in train for t in _user_texts(c)}
    evals = _gen_split("eval", n_eval, random.Random(f"tooltune-cs-{seed}-eval"), seen, forbidden)
    if n_train >= DEFAULT_TRAIN:
        low = {t: n for t, n in tool_counts(train).items() if n < MIN_TRAIN_PER_TOOL}
        assert not low, f"tools with < {MIN_TRAIN_PER_TOOL} train conversations: {low}"
    return train, evals


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _dump_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _write_atomic(path: str, text: str) -> str:
    data = text.encode("utf-8")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def write(out_dir: str | os.PathLike, seed: int = 0, n_train: int = DEFAULT_TRAIN,
          n_eval: int = DEFAULT_EVAL) -> dict[str, str]:
    """Write tools.json, train.jsonl and eval.jsonl into ``out_dir``; return their sha256."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    train, evals = generate(seed, n_train, n_eval)
    return {
        "tools.json": _write_atomic(os.path.join(out_dir, "tools.json"),
                                    json.dumps(TOOLS, ensure_ascii=False, indent=2) + "\n"),
        "train.jsonl": _write_atomic(os.path.join(out_dir, "train.jsonl"), _dump_jsonl(train)),
        "eval.jsonl": _write_atomic(os.path.join(out_dir, "eval.jsonl"), _dump_jsonl(evals)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python data/customer_service/datagen.py", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="data/customer_service")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=DEFAULT_TRAIN)
    ap.add_argument("--eval", type=int, default=DEFAULT_EVAL)
    a = ap.parse_args(argv)
    hashes = write(a.out, seed=a.seed, n_train=a.train, n_eval=a.eval)
    for name, h in hashes.items():
        print(f"{h}  {os.path.join(a.out, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
