"""The train/eval split, and the values each split draws from.

Every pool of phrasing templates (per intent) and of values (names, cities,
streets, products, email domains, discount-code words, issue descriptions,
...) is cut into disjoint train/eval parts by a fixed hash (``split_list``);
generated values (order ids, SKUs, amounts, dates, phones, postal codes) are
assigned to a split by hashing the value itself (``Pools._ok``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
from typing import Callable

from phrases import (CANCEL_REASONS, CITIES, CODE_WORDS, EMAIL_DOMAINS, FIRST_NAMES, ISSUES, LAST_NAMES, PRIORITIES, PRODUCTS, REFUND_METHODS,
                     REFUND_REASONS, RESET_METHODS, RETURN_REASONS, STREET_NAMES, STREET_SUFFIXES, TIME_WINDOWS)

# --------------------------------------------------------------------------
# Train/eval split helpers
# --------------------------------------------------------------------------


def _h(s: str) -> int:
    return int(hashlib.sha256(("tooltune-split:" + s).encode("utf-8")).hexdigest()[:12], 16)


def _heldout_value(s: str) -> bool:
    """Generated values (ids, amounts, dates, ...) whose hash % 5 == 0 are eval-only."""
    return _h("v:" + s) % 5 == 0


def split_list(key: str, items: list, split: str, frac: float = 0.25) -> list:
    """Deterministic disjoint split of a list: ~frac of the items go to eval.

    Items are ordered by a hash of (key, item); the first ones are eval.  With
    at least 3 items, both sides get at least one item (two when >= 6)."""
    n = len(items)
    if n < 3:
        return list(items)  # too few to split; shared by both splits
    n_eval = max(1, round(n * frac))
    if n >= 6:
        n_eval = max(2, n_eval)
    order = sorted(range(n), key=lambda i: (_h(key + "|" + json.dumps(items[i])), i))
    chosen = set(order[:n_eval]) if split == "eval" else set(order[n_eval:])
    return [items[i] for i in range(n) if i in chosen]


# --------------------------------------------------------------------------
# Value pools
# --------------------------------------------------------------------------


def _flatten_phrases(key: str, mapping: dict, split: str) -> dict:
    return {k: split_list(key + ":" + k, v, split) for k, v in mapping.items()}


class Pools:
    """Value pools for one split (train or eval); eval pools are disjoint."""

    def __init__(self, split: str):
        assert split in ("train", "eval")
        self.split = split
        self.is_eval = split == "eval"
        self.first = split_list("first", FIRST_NAMES, split)
        self.last = split_list("last", LAST_NAMES, split)
        self.domains = split_list("domain", EMAIL_DOMAINS, split)
        self.cities = split_list("city", CITIES, split)
        self.streets = split_list("street", STREET_NAMES, split)
        self.products = split_list("product", [list(p) for p in PRODUCTS], split)
        self.code_words = split_list("codeword", CODE_WORDS, split)
        self.issues = split_list("issue", [list(i) for i in ISSUES], split)
        self.return_reasons = _flatten_phrases("return_reason", RETURN_REASONS, split)
        self.cancel_reasons = _flatten_phrases("cancel_reason", CANCEL_REASONS, split)
        self.refund_reasons = _flatten_phrases("refund_reason", REFUND_REASONS, split)
        self.refund_methods = _flatten_phrases("refund_method", REFUND_METHODS, split)
        self.reset_methods = _flatten_phrases("reset_method", RESET_METHODS, split)
        self.time_windows = _flatten_phrases("time_window", TIME_WINDOWS, split)
        self.priorities = _flatten_phrases("priority", PRIORITIES, split)

    def _ok(self, s: str) -> bool:
        return _heldout_value(s) == self.is_eval

    def _gen(self, make: Callable[[], str]) -> str:
        while True:
            s = make()
            if self._ok(s):
                return s

    # generated values -------------------------------------------------
    def order_id(self, rng: random.Random) -> str:
        return self._gen(lambda: f"ORD-{rng.randrange(100000, 1000000)}")

    def sku(self, rng: random.Random) -> str:
        return self._gen(lambda: f"SKU-{rng.randrange(10000, 100000)}")

    def postal(self, rng: random.Random) -> str:
        return self._gen(lambda: f"{rng.randrange(1001, 99951):05d}")

    def phone_digits(self, rng: random.Random) -> str:
        return self._gen(lambda: f"{rng.randrange(201, 990)}{rng.randrange(200, 1000)}{rng.randrange(0, 10000):04d}")

    def cents(self, rng: random.Random, lo: int = 300, hi: int = 50000) -> int:
        def make() -> str:
            c = rng.randrange(lo, hi)
            if rng.random() < 0.25:
                c = max(100, c // 100 * 100)
            return str(c)
        return int(self._gen(make))

    def date(self, rng: random.Random, start: _dt.date, span_days: int) -> _dt.date:
        s = self._gen(lambda: (start + _dt.timedelta(days=rng.randrange(span_days))).isoformat())
        return _dt.date.fromisoformat(s)

    def code(self, rng: random.Random) -> str:
        return self._gen(lambda: rng.choice(self.code_words) + str(rng.choice([5, 10, 15, 20, 25, 30, 40, 50])))

    def ref(self, rng: random.Random, prefix: str, digits: int = 6) -> str:
        return f"{prefix}-{rng.randrange(10 ** (digits - 1), 10 ** digits)}"

    # list values --------------------------------------------------------
    def name(self, rng: random.Random) -> tuple[str, str]:
        return rng.choice(self.first), rng.choice(self.last)

    def email(self, rng: random.Random) -> str:
        first, last = self.name(rng)
        d = rng.choice(self.domains)
        style = rng.randrange(5)
        if style == 0:
            local = f"{first}.{last}"
        elif style == 1:
            local = f"{first}{last[0]}{rng.randrange(1, 100)}"
        elif style == 2:
            local = f"{first[0]}{last}"
        elif style == 3:
            local = f"{first}_{last}{rng.randrange(70, 100)}"
        else:
            local = f"{first}{rng.randrange(1, 1000)}"
        return f"{local}@{d}"

    def street(self, rng: random.Random) -> str:
        return f"{rng.randrange(1, 9900)} {rng.choice(self.streets)} {rng.choice(STREET_SUFFIXES)}"

    def product(self, rng: random.Random) -> tuple[str, str]:
        p = rng.choice(self.products)
        return p[0], p[1]
