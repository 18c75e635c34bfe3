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
from typing import Any, Callable

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
KINDS = [k for k, _ in KIND_SHARES]

# --------------------------------------------------------------------------
# Tool schemas
# --------------------------------------------------------------------------

ORDER_ID_RE = r"^ORD-\d{6}$"
SKU_RE = r"^SKU-\d{5}$"
DATE_RE = r"^\d{4}-\d{2}-\d{2}$"
EMAIL_RE = r"^\S+@\S+\.\w+$"
POSTAL_RE = r"^\d{5}$"
PHONE_RE = r"^\+?\d{10,15}$"
CODE_RE = r"^[A-Z0-9]{4,16}$"

# Schemas are kept terse on purpose: a tiny model sees all 15 tools in every
# prompt, so patterns/enums carry the format and descriptions stay one line.


def _order_id() -> dict:
    return {"type": "string", "pattern": ORDER_ID_RE}


def _email() -> dict:
    return {"type": "string", "format": "email", "pattern": EMAIL_RE}


def _date() -> dict:
    return {"type": "string", "format": "date", "pattern": DATE_RE}


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}

TOOLS: list[dict] = [
    _tool("check_order_status", "Get the status of an order.", {
        "order_id": _order_id(),
        "include_items": _BOOL,
    }, ["order_id"]),
    _tool("track_shipment", "Track the shipment of an order.", {
        "order_id": _order_id(),
        "include_history": _BOOL,
    }, ["order_id"]),
    _tool("cancel_order", "Cancel an order that has not shipped.", {
        "order_id": _order_id(),
        "reason": {"type": "string", "enum": ["changed_mind", "ordered_by_mistake",
                                              "found_better_price", "delivery_too_slow", "other"]},
    }, ["order_id"]),
    _tool("initiate_return", "Start a return and get a return label.", {
        "order_id": _order_id(),
        "reason": {"type": "string", "enum": ["damaged", "wrong_item", "wrong_size",
                                              "not_as_described", "no_longer_needed"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
    }, ["order_id", "reason"]),
    _tool("submit_refund", "Refund an amount in USD for an order.", {
        "order_id": _order_id(),
        "amount": {"type": "number", "minimum": 0.01, "maximum": 5000},
        "reason": {"type": "string", "enum": ["damaged", "late_delivery", "missing_item",
                                              "price_adjustment", "other"]},
        "refund_method": {"type": "string", "enum": ["original_payment", "store_credit"]},
    }, ["order_id", "amount"]),
    _tool("update_shipping_address", "Change the delivery address of an order.", {
        "order_id": _order_id(),
        "street": _STR,
        "apartment": _STR,
        "city": _STR,
        "postal_code": {"type": "string", "pattern": POSTAL_RE},
    }, ["order_id", "street", "city", "postal_code"]),
    _tool("search_products", "Search the product catalog.", {
        "query": {"type": "string", "minLength": 2},
        "category": {"type": "string", "enum": ["footwear", "jackets", "tents", "backpacks",
                                                "clothing", "accessories"]},
        "max_price": {"type": "number", "minimum": 1, "maximum": 10000},
    }, ["query"]),
    _tool("check_product_availability", "Check stock of a product, optionally near a ZIP code.", {
        "sku": {"type": "string", "pattern": SKU_RE},
        "size": {"type": "string", "enum": ["XS", "S", "M", "L", "XL", "XXL"]},
        "postal_code": {"type": "string", "pattern": POSTAL_RE},
    }, ["sku"]),
    _tool("get_account_details", "Look up a customer account.", {
        "email": _email(),
    }, ["email"]),
    _tool("update_account_email", "Change the email of an account.", {
        "current_email": _email(),
        "new_email": _email(),
    }, ["current_email", "new_email"]),
    _tool("reset_password", "Send a password reset link.", {
        "email": _email(),
        "method": {"type": "string", "enum": ["email", "sms"]},
    }, ["email"]),
    _tool("apply_discount_code", "Apply a discount code to an order.", {
        "order_id": _order_id(),
        "code": {"type": "string", "pattern": CODE_RE},
    }, ["order_id", "code"]),
    _tool("list_recent_orders", "List a customer's recent orders.", {
        "email": _email(),
        "limit": {"type": "integer", "minimum": 1, "maximum": 20},
        "since": _date(),
    }, ["email"]),
    _tool("escalate_to_human", "Hand the case to a human agent.", {
        "summary": {"type": "string", "maxLength": 200},
        "priority": {"type": "string", "enum": ["low", "normal", "high", "urgent"]},
        "order_id": _order_id(),
    }, ["summary"]),
    _tool("schedule_callback", "Book a phone callback.", {
        "phone": {"type": "string", "pattern": PHONE_RE},
        "date": _date(),
        "time_window": {"type": "string", "enum": ["morning", "afternoon", "evening"]},
        "order_id": _order_id(),
    }, ["phone", "date", "time_window"]),
]

TOOL_NAMES: list[str] = [t["function"]["name"] for t in TOOLS]
SCHEMAS: dict[str, dict] = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------

try:  # pragma: no cover - depends on the environment
    import jsonschema as _jsonschema
except ImportError:  # pragma: no cover
    _jsonschema = None


def _mini_validate(args: Any, schema: dict) -> None:
    import re

    if not isinstance(args, dict):
        raise ValueError("arguments must be an object")
    props = schema["properties"]
    for req in schema.get("required", []):
        if req not in args:
            raise ValueError(f"missing required {req}")
    for key, val in args.items():
        if key not in props:
            raise ValueError(f"unexpected {key}")
        p = props[key]
        typ = p["type"]
        if typ == "string":
            ok = isinstance(val, str)
        elif typ == "integer":
            ok = isinstance(val, int) and not isinstance(val, bool)
        elif typ == "number":
            ok = isinstance(val, (int, float)) and not isinstance(val, bool)
        elif typ == "boolean":
            ok = isinstance(val, bool)
        else:
            ok = False
        if not ok:
            raise ValueError(f"{key}: wrong type")
        if "enum" in p and val not in p["enum"]:
            raise ValueError(f"{key}: not in enum")
        if "pattern" in p and not re.search(p["pattern"], val):
            raise ValueError(f"{key}: pattern")
        if "minLength" in p and len(val) < p["minLength"]:
            raise ValueError(f"{key}: too short")
        if "maxLength" in p and len(val) > p["maxLength"]:
            raise ValueError(f"{key}: too long")
        if "minimum" in p and val < p["minimum"]:
            raise ValueError(f"{key}: below minimum")
        if "maximum" in p and val > p["maximum"]:
            raise ValueError(f"{key}: above maximum")


def validate_call(name: str, args: Any) -> None:
    """Raise if ``args`` does not validate against the schema of tool ``name``."""
    schema = SCHEMAS[name]
    if _jsonschema is not None:
        v = _VALIDATORS.get(name)
        if v is None:
            cls = _jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            v = _VALIDATORS[name] = cls(schema)
        err = _jsonschema.exceptions.best_match(v.iter_errors(args))
        if err is not None:
            raise err
    else:  # pragma: no cover
        _mini_validate(args, schema)


_VALIDATORS: dict[str, Any] = {}


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

FIRST_NAMES = [
    "maria", "james", "aisha", "chen", "liam", "sofia", "noah", "emma", "omar", "priya",
    "lucas", "hannah", "diego", "yuki", "ethan", "fatima", "oliver", "grace", "mateo", "zoe",
    "ivan", "chloe", "kwame", "nina", "samuel", "leah", "arjun", "mia", "tomas", "ava",
    "hiro", "elena", "david", "sara", "felix", "amara", "jonas", "lily", "rafael", "nora",
    "kai", "julia", "marcus", "ines", "ben", "clara", "andre", "maya", "leo", "rosa",
    "victor", "tara", "oscar", "eva", "hugo", "alice", "jamal", "ruby", "pablo", "wendy",
]
LAST_NAMES = [
    "lopez", "smith", "khan", "wang", "murphy", "rossi", "johnson", "garcia", "ali", "patel",
    "silva", "meyer", "torres", "tanaka", "brown", "hassan", "wilson", "kim", "fernandez", "clark",
    "petrov", "martin", "mensah", "novak", "davis", "cohen", "sharma", "nguyen", "costa", "lee",
    "sato", "popescu", "miller", "jensen", "wagner", "okafor", "berg", "evans", "moreno", "walsh",
    "young", "fischer", "reed", "santos", "hughes", "dubois", "ramos", "bauer", "price", "ortiz",
]
EMAIL_DOMAINS = [
    "gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me", "hotmail.com",
    "aol.com", "mail.com", "fastmail.com", "gmx.com", "zoho.com", "hey.com",
    "comcast.net", "verizon.net", "example.org", "live.com",
]
CITIES = [
    "Denver", "Austin", "Portland", "Seattle", "Boston", "Chicago", "Atlanta", "Phoenix",
    "Madison", "Boulder", "Tucson", "Raleigh", "Omaha", "Spokane", "Fresno", "Reno",
    "Savannah", "Burlington", "Asheville", "Missoula", "Boise", "Tulsa", "Richmond", "Dayton",
    "Albany", "Eugene", "Provo", "Durham", "Lincoln", "Anchorage", "Flagstaff", "Bend",
    "Sacramento", "Pittsburgh", "Nashville", "Memphis", "Louisville", "Columbus", "Santa Fe",
    "Salt Lake City", "San Diego", "Kansas City", "Des Moines", "Little Rock", "Charleston",
    "Fort Collins", "Ann Arbor", "Green Bay",
]
STREET_NAMES = [
    "Maple", "Oak", "Pine", "Cedar", "Elm", "Birch", "Willow", "Aspen", "Juniper", "Spruce",
    "Lake", "River", "Hillside", "Meadow", "Sunset", "Highland", "Park", "Forest", "Valley",
    "Canyon", "Ridge", "Harbor", "Prairie", "Summit", "Orchard", "Brookside", "Chestnut",
    "Magnolia", "Redwood", "Sycamore", "Lincoln", "Franklin", "Jefferson", "Madison", "Walnut",
    "Church", "Mill", "Bridge", "Quarry", "Fairview",
]
STREET_SUFFIXES = ["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Boulevard", "Place", "St", "Ave", "Rd"]
PRODUCTS = [  # (name, category)
    ("trail running shoes", "footwear"), ("waterproof hiking boots", "footwear"),
    ("camp sandals", "footwear"), ("winter snow boots", "footwear"), ("approach shoes", "footwear"),
    ("wool hiking socks", "accessories"), ("insulated water bottle", "accessories"),
    ("headlamp", "accessories"), ("trekking poles", "accessories"), ("sunglasses", "accessories"),
    ("camping stove", "accessories"), ("sleeping pad", "accessories"), ("dry bags", "accessories"),
    ("down jacket", "jackets"), ("rain jacket", "jackets"), ("fleece jacket", "jackets"),
    ("softshell jacket", "jackets"), ("ski parka", "jackets"), ("windbreaker", "jackets"),
    ("insulated vest", "jackets"),
    ("2-person tent", "tents"), ("4-person tent", "tents"), ("ultralight tent", "tents"),
    ("family camping tent", "tents"), ("bivy sack", "tents"), ("hammock tent", "tents"),
    ("daypack", "backpacks"), ("65 liter backpack", "backpacks"), ("hydration pack", "backpacks"),
    ("laptop backpack", "backpacks"), ("kids backpack", "backpacks"), ("climbing pack", "backpacks"),
    ("merino base layer", "clothing"), ("hiking pants", "clothing"), ("rain pants", "clothing"),
    ("sun hoodie", "clothing"), ("running shorts", "clothing"), ("thermal leggings", "clothing"),
    ("flannel shirt", "clothing"), ("beanie", "clothing"),
]
CATEGORY_WORDS = {
    "footwear": ["footwear", "shoes", "shoe"],
    "jackets": ["jackets", "outerwear", "jacket"],
    "tents": ["tents", "shelters", "tent"],
    "backpacks": ["backpacks", "packs", "bags"],
    "clothing": ["clothing", "apparel", "clothes"],
    "accessories": ["accessories", "gear accessories", "gear"],
}
CODE_WORDS = [
    "SAVE", "SPRING", "WELCOME", "SUMMER", "FALL", "HIKE", "TRAIL", "CAMP", "VIP", "FRIEND",
    "BDAY", "FLASH", "WINTER", "EXTRA", "THANKS", "PEAK", "SUMMIT", "GEAR", "OUTDOOR", "LOYAL",
]
SIZE_WORDS = {
    "XS": ["XS", "extra small"], "S": ["S", "small"], "M": ["M", "medium"],
    "L": ["L", "large"], "XL": ["XL", "extra large"], "XXL": ["XXL", "2XL"],
}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

RETURN_REASONS = {
    "damaged": ["it arrived damaged", "it showed up broken", "the zipper was torn when it came",
                "it came with a crack"],
    "wrong_item": ["you sent the wrong item", "I got a different product than I ordered",
                   "the box had the wrong thing in it"],
    "wrong_size": ["it doesn't fit", "the size is wrong", "it's too small", "it runs too big"],
    "not_as_described": ["it looks nothing like the photos", "it isn't as described",
                         "the color is different from the listing"],
    "no_longer_needed": ["I don't need it anymore", "I ended up not needing it",
                         "it was a gift they already had"],
}
CANCEL_REASONS = {
    "changed_mind": ["I changed my mind", "I decided against it", "I don't want it after all"],
    "ordered_by_mistake": ["I ordered it by mistake", "I clicked buy by accident",
                           "I placed it twice by accident"],
    "found_better_price": ["I found it cheaper somewhere else", "I found a better price",
                           "another store has it for less"],
    "delivery_too_slow": ["the delivery is taking too long", "it won't arrive in time",
                          "shipping is too slow"],
}
REFUND_REASONS = {
    "damaged": ["it arrived damaged", "the item was broken", "it came with a crack"],
    "late_delivery": ["it arrived late", "the delivery was a week late",
                      "it showed up after the promised date"],
    "missing_item": ["an item was missing from the box", "one of the items never arrived",
                     "the package was missing a piece"],
    "price_adjustment": ["the price dropped right after I bought it", "it went on sale the next day",
                         "I was charged more than the listed price"],
}
REFUND_METHODS = {
    "original_payment": ["to my original card", "back to my credit card", "to the card I paid with"],
    "store_credit": ["as store credit", "as credit on my account", "as a store gift card"],
}
RESET_METHODS = {
    "email": ["by email", "to my inbox", "over email"],
    "sms": ["by text message", "via SMS", "as a text"],
}
TIME_WINDOWS = {
    "morning": ["in the morning", "before noon", "sometime in the morning"],
    "afternoon": ["in the afternoon", "after lunch", "sometime in the afternoon"],
    "evening": ["in the evening", "after 5pm", "sometime in the evening"],
}
PRIORITIES = {
    "urgent": ["This is urgent.", "It's an emergency.", "I need this fixed today."],
    "high": ["It's pretty important.", "Please prioritize this.", "This matters a lot to me."],
    "low": ["No rush.", "Whenever someone has time is fine.", "It's not urgent."],
}
ISSUES = [  # (user phrase, summary written by the assistant)
    ("my refund that never arrived", "Refund never arrived"),
    ("a double charge on my card", "Customer was charged twice"),
    ("a package marked delivered that I never got", "Package marked delivered but not received"),
    ("a rude experience at your store", "Complaint about an in-store experience"),
    ("a warranty claim on my tent", "Warranty claim for a tent"),
    ("my locked account", "Customer account is locked"),
    ("a billing error on my statement", "Billing error on statement"),
    ("a damaged item nobody has fixed", "Unresolved damaged item"),
    ("getting the wrong item twice", "Wrong item sent twice"),
    ("a gift card that won't work", "Gift card not working"),
    ("a bulk order for my team", "Bulk order inquiry"),
    ("missing loyalty points", "Missing loyalty points"),
    ("a broken zipper still under warranty", "Warranty claim for a broken zipper"),
    ("a return that was never processed", "Return not processed"),
    ("being charged after I cancelled", "Charged after cancellation"),
    ("a lost package claim", "Lost package claim"),
]


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


# --------------------------------------------------------------------------
# Surface forms and slot filling
# --------------------------------------------------------------------------


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _amount_value(cents: int) -> float | int:
    return cents // 100 if cents % 100 == 0 else round(cents / 100, 2)


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

TODAY = _dt.date(2025, 6, 1)


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


# --------------------------------------------------------------------------
# User phrasing templates (split per intent into disjoint train/eval sets)
# --------------------------------------------------------------------------

# tool -> list of (template, fixed_args)
SINGLE_TEMPLATES: dict[str, list[tuple[str, dict]]] = {
    "check_order_status": [
        ("Where is my order {order_id}?", {}),
        ("Can you check the status of {order_id}?", {}),
        ("{order_id} - what's the status on that one?", {}),
        ("I ordered something last week, order number {order_id}. Any update?", {}),
        ("What's going on with order {order_id}?", {}),
        ("Could you tell me whether {order_id} has been processed yet?", {}),
        ("Status check please: {order_id}", {}),
        ("Just wondering if the order I placed, {order_id}, is confirmed.", {}),
        ("Is {order_id} still processing or is it done?", {}),
        ("What items are in order {order_id}, and what's its status?", {"include_items": True}),
        ("Can you list what I bought in {order_id} and tell me where it stands?", {"include_items": True}),
        ("For {order_id}, show me the items and the current status.", {"include_items": True}),
        ("I forgot what I ordered in {order_id}; can you check it, items included?", {"include_items": True}),
    ],
    "track_shipment": [
        ("Can you track my package for order {order_id}?", {}),
        ("Where is the shipment for {order_id} right now?", {}),
        ("{order_id} was supposed to arrive yesterday, can you track it?", {}),
        ("When will my package from order {order_id} get here?", {}),
        ("Tracking info for {order_id} please.", {}),
        ("My delivery hasn't shown up. The order is {order_id}.", {}),
        ("Which carrier has {order_id} and when will it be delivered?", {}),
        ("Since I ordered {order_id} the tracking page hasn't updated, where is it?", {}),
        ("Please give me the full tracking history for {order_id}.", {"include_history": True}),
        ("Show every scan for the package in {order_id}.", {"include_history": True}),
        ("I want all the tracking events for {order_id}, not just the latest.", {"include_history": True}),
    ],
    "cancel_order": [
        ("Please cancel order {order_id}.", {}),
        ("I need to cancel {order_id}, {cancel_reason}.", {}),
        ("Cancel {order_id} for me please.", {}),
        ("{order_id} needs to be cancelled.", {}),
        ("Can I cancel the order I just placed? It's {order_id}.", {}),
        ("Because {cancel_reason}, I'd like to cancel {order_id}.", {}),
        ("Stop order {order_id}, {cancel_reason}.", {}),
        ("Is it possible to cancel {order_id} before it ships?", {}),
        ("Hey, {cancel_reason}, so please cancel my order {order_id}.", {}),
        ("Go ahead and cancel {order_id}.", {}),
    ],
    "initiate_return": [
        ("I want to return {order_id} because {return_reason}.", {}),
        ("{return_reason}, so I'd like to send back order {order_id}.", {}),
        ("Can I start a return for {order_id}? Basically {return_reason}.", {}),
        ("Return request for {order_id}: {return_reason}.", {}),
        ("I need to return {quantity} items from {order_id} since {return_reason}.", {}),
        ("Please set up a return of {quantity} units from order {order_id}; {return_reason}.", {}),
        ("Order {order_id} - {return_reason}. I want to return it.", {}),
        ("How do I send back {order_id}? {return_reason}.", {}),
        ("I'm returning {quantity} things from {order_id} because {return_reason}.", {}),
        ("Since {return_reason}, please start a return on {order_id}.", {}),
    ],
    "submit_refund": [
        ("Please refund {amount} on order {order_id}.", {}),
        ("I was told I'd get {amount} back for {order_id}, can you process that?", {}),
        ("Refund {amount} to me for {order_id} because {refund_reason}.", {}),
        ("{order_id}: {refund_reason}, so I'd like a refund of {amount}.", {}),
        ("Can you issue a {amount} refund for {order_id} {refund_method}?", {}),
        ("For order {order_id}, please refund {amount} {refund_method} since {refund_reason}.", {}),
        ("I'm owed {amount} on {order_id}.", {}),
        ("Could I get {amount} refunded for order {order_id}?", {}),
        ("Since {refund_reason}, please send {amount} back {refund_method} for {order_id}.", {}),
        ("{amount} refund on {order_id} please, {refund_reason}.", {}),
        ("The agent promised a refund of {amount} {refund_method} on {order_id}.", {}),
    ],
    "update_shipping_address": [
        ("Please change the shipping address on {order_id} to {street}, {city} {postal_code}.", {}),
        ("I moved! Ship {order_id} to {street}, {city}, {postal_code} instead.", {}),
        ("Can you send order {order_id} to {street} in {city}, zip {postal_code}?", {}),
        ("New address for {order_id}: {street}, {city} {postal_code}.", {}),
        ("{street}, {city} {postal_code} is where {order_id} should go now.", {}),
        ("Update the delivery address for {order_id} to {street}, apartment {apartment}, {city} {postal_code}.", {}),
        ("Ship {order_id} to {street} apt {apartment}, {city}, {postal_code} please.", {}),
        ("The address on {order_id} is wrong; it should be {street}, {city} {postal_code}.", {}),
        ("I'm staying at {street}, unit {apartment}, {city} {postal_code} - can {order_id} go there?", {}),
        ("Redirect {order_id} to {street}, {city}, zip code {postal_code}.", {}),
    ],
    "search_products": [
        ("Do you sell {query}?", {}),
        ("I'm looking for {query}.", {}),
        ("Show me {query} under {max_price}.", {}),
        ("Any {query} for less than {max_price}?", {}),
        ("Can you find {query} in the {category} section?", {}),
        ("Search your {category} for {query} under {max_price}.", {}),
        ("What {query} do you have?", {}),
        ("I need some {query} for a trip next month, what have you got?", {}),
        ("My budget is {max_price}; what {query} can I get?", {}),
        ("Looking in {category}: do you carry {query}?", {}),
        ("Got any {query}?", {}),
    ],
    "check_product_availability": [
        ("Is {sku} in stock?", {}),
        ("Do you have {sku} available?", {}),
        ("Can you check stock for item {sku}?", {}),
        ("Is {sku} available in size {size}?", {}),
        ("I need {sku} in {size}, do you have it?", {}),
        ("Is {sku} in stock at a store near {postal_code}?", {}),
        ("Check if {sku} in size {size} is available near {postal_code}.", {}),
        ("{sku} - any left?", {}),
        ("Before I order {sku}, can you confirm it's in stock?", {}),
        ("Can I pick up {sku} somewhere around {postal_code}?", {}),
        ("Size {size} of {sku}: is it available?", {}),
    ],
    "get_account_details": [
        ("Can you pull up my account? My email is {email}.", {}),
        ("What are my account details? I use {email}.", {}),
        ("How many loyalty points do I have? Account email {email}.", {}),
        ("{email} is my login, can you look up my account?", {}),
        ("Look up the account for {email} please.", {}),
        ("I'd like to see my profile info, it's registered under {email}.", {}),
        ("When did I join? My email's {email}.", {}),
        ("Check my account, {email}.", {}),
        ("Under {email}, what info do you have on file?", {}),
    ],
    "update_account_email": [
        ("Please change my email from {current_email} to {new_email}.", {}),
        ("I want to update my account email to {new_email}; the current one is {current_email}.", {}),
        ("My old email {current_email} no longer works, switch it to {new_email}.", {}),
        ("Replace {current_email} with {new_email} on my account.", {}),
        ("Can you set {new_email} as my new email? Right now it's {current_email}.", {}),
        ("Update email: {current_email} -> {new_email}", {}),
        ("I'm changing providers, so move my account from {current_email} to {new_email}.", {}),
        ("The account under {current_email} should use {new_email} from now on.", {}),
    ],
    "reset_password": [
        ("I forgot my password, my email is {email}.", {}),
        ("Reset the password for {email} please.", {}),
        ("Can't log in. Can you send a password reset to {email}?", {}),
        ("{email} - I need a new password.", {}),
        ("Please send a reset link for {email} {method}.", {}),
        ("I'm locked out of {email}, could you reset it {method}?", {}),
        ("Send me a password reset {method}; account is {email}.", {}),
        ("How do I reset my password? My account is {email}.", {}),
        ("My login {email} stopped working, please reset the password.", {}),
    ],
    "apply_discount_code": [
        ("Can you apply code {code} to order {order_id}?", {}),
        ("I forgot to use {code} on {order_id}.", {}),
        ("Please add the discount {code} to {order_id}.", {}),
        ("{order_id}: I have a promo code, {code}.", {}),
        ("Is it too late to use {code} for my order {order_id}?", {}),
        ("Use coupon {code} on {order_id} please.", {}),
        ("I got {code} in an email, can it go on {order_id}?", {}),
        ("Apply the promo {code} to my order, which is {order_id}.", {}),
        ("My friend gave me code {code}; please put it on {order_id}.", {}),
    ],
    "list_recent_orders": [
        ("What have I ordered recently? My email is {email}.", {}),
        ("Show my recent orders for {email}.", {}),
        ("List my last {limit} orders, account {email}.", {}),
        ("Can you show the orders on {email} since {since}?", {}),
        ("I need my order history since {since}; email is {email}.", {}),
        ("Show the last {limit} orders placed since {since} under {email}.", {}),
        ("{email} - what orders do I have?", {}),
        ("I can't find my order number. Could you list my orders? I use {email}.", {}),
        ("Just the {limit} most recent orders for {email}, please.", {}),
        ("Anything I bought after {since}? My account is {email}.", {}),
    ],
    "escalate_to_human": [
        ("I want to talk to a real person about {issue}.", {}),
        ("Please get me a human, it's about {issue}.", {}),
        ("Connect me with an agent about {issue} on order {order_id}.", {}),
        ("I need a human to look at {order_id}, it's about {issue}. {priority}", {}),
        ("Escalate this please: {issue}.", {}),
        ("Transfer me to a human about {issue}. {priority}", {}),
        ("No more bots, I want a person to handle {issue}.", {}),
        ("Can a manager contact me regarding {issue}? {priority}", {}),
        ("About {issue} on {order_id}: I need a supervisor.", {}),
    ],
    "schedule_callback": [
        ("Can someone call me at {phone} on {date} {time_window}?", {}),
        ("Please schedule a callback to {phone} for {date}, {time_window}.", {}),
        ("I'd like a phone call on {date} {time_window}. My number is {phone}.", {}),
        ("Call me {time_window} on {date} at {phone}, please.", {}),
        ("{phone} - can I get a call back {time_window} on {date}?", {}),
        ("Have an agent ring {phone} on {date} {time_window} about order {order_id}.", {}),
        ("Book me a callback {time_window} on {date} to discuss {order_id}; my number is {phone}.", {}),
        ("On {date}, {time_window}, could you call {phone}?", {}),
        ("I prefer talking on the phone: {phone}, {date}, {time_window}.", {}),
    ],
}

# Parallel calls of the same tool: fields of the second call end in "_b".
PARALLEL_SAME_TEMPLATES: dict[str, list[str]] = {
    "track_shipment": [
        "Can you track {order_id} and {order_id_b}?",
        "Where are my packages {order_id} and {order_id_b}?",
        "I have two deliveries coming, {order_id} and {order_id_b}. Where are they?",
        "Tracking for {order_id} plus {order_id_b} please.",
        "Both {order_id} and {order_id_b} are late, can you track them?",
        "Please track order {order_id} and also order {order_id_b}.",
    ],
    "check_order_status": [
        "What's the status of {order_id} and {order_id_b}?",
        "Check {order_id} and {order_id_b} for me please.",
        "I placed {order_id} and {order_id_b} last week, are they processed?",
        "Status of both orders please: {order_id}, {order_id_b}.",
        "Can you look up orders {order_id} and {order_id_b}?",
        "Any update on {order_id}? And on {order_id_b}?",
    ],
    "check_product_availability": [
        "Are {sku} and {sku_b} in stock?",
        "Can you check stock for {sku} and {sku_b}?",
        "I want {sku} and {sku_b}; are both available?",
        "Do you have {sku} or {sku_b} right now?",
        "Stock check on two items: {sku}, {sku_b}.",
    ],
    "search_products": [
        "Do you sell {query} and {query_b}?",
        "I'm looking for {query} and also {query_b}.",
        "Show me {query}, and {query_b} too.",
        "Search for {query} and {query_b} please.",
        "What {query} and what {query_b} do you have?",
    ],
    "cancel_order": [
        "Please cancel {order_id} and {order_id_b}.",
        "Cancel both {order_id} and {order_id_b}, I ordered them by accident.",
        "I need orders {order_id} and {order_id_b} cancelled.",
        "Stop {order_id} as well as {order_id_b}.",
        "Can you cancel {order_id}? {order_id_b} too.",
    ],
}

CONNECTORS = ["Also,", "And", "Oh and", "Separately,", "One more thing:", "Plus,", "While you're at it,",
              "Additionally,", "Another thing:", "And also", "Besides that,", "On top of that,"]
PREFIXES = ["Hi,", "Hello,", "Hey there,", "Good morning,", "Hi there!", "Quick question:",
            "Hello, this is {name}.", "Hi, {name} here.", "Excuse me,", "Hey,", "Hiya,",
            "Good evening,", "Hi team,", "Morning!", "Hello again,", "Hi, it's {name}."]
SUFFIXES = ["Thanks!", "Thank you.", "Thanks in advance.", "Appreciate it.", "thx", "Cheers.",
            "Much appreciated!", "Please help.", "Ty!", "Thanks so much.", "Thanks a lot.", "Many thanks."]

# Missing-argument intents: (template, missing group)
MISSING_TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "check_order_status": [
        ("Where is my order?", "order_id"), ("Can you check my order status?", "order_id"),
        ("What's happening with the order I placed?", "order_id"),
        ("Has my order been processed yet?", "order_id"), ("I want an update on my purchase.", "order_id"),
        ("Is my order confirmed?", "order_id"),
    ],
    "track_shipment": [
        ("Where's my package?", "order_id"), ("Can you track my delivery?", "order_id"),
        ("My parcel hasn't arrived, can you track it?", "order_id"),
        ("When will my shipment get here?", "order_id"), ("Tracking update please.", "order_id"),
    ],
    "cancel_order": [
        ("I need to cancel my order.", "order_id"),
        ("Please cancel my last purchase, {cancel_reason}.", "order_id"),
        ("Cancel my order please.", "order_id"), ("Because {cancel_reason}, I want to cancel.", "order_id"),
    ],
    "initiate_return": [
        ("I want to return something because {return_reason}.", "order_id"),
        ("How do I send back an item? {return_reason}.", "order_id"),
        ("I'd like to return order {order_id}.", "return_reason"),
        ("Start a return for {order_id} please.", "return_reason"),
        ("Can {order_id} be returned?", "return_reason"),
    ],
    "submit_refund": [
        ("I want a refund for order {order_id}.", "amount"),
        ("Can you refund my order {order_id}?", "amount"),
        ("Please refund me {amount}.", "order_id"), ("I'm owed a {amount} refund.", "order_id"),
        ("Refund {order_id}, {refund_reason}.", "amount"),
    ],
    "update_shipping_address": [
        ("I need to change the shipping address on {order_id}.", "address"),
        ("Can I update where {order_id} is going?", "address"),
        ("Ship my order to {street}, {city} {postal_code} instead.", "order_id"),
        ("My new address is {street}, {city} {postal_code}, please update my order.", "order_id"),
        ("Wrong address on {order_id}!", "address"),
    ],
    "search_products": [
        ("Can you search the catalog for me?", "query"), ("I want to browse some products.", "query"),
        ("Help me find something to buy.", "query"), ("What do you have under {max_price}?", "query"),
    ],
    "check_product_availability": [
        ("Is this item in stock?", "sku"), ("Do you have it in size {size}?", "sku"),
        ("Can you check if the product is available?", "sku"),
        ("Is it available near {postal_code}?", "sku"),
    ],
    "get_account_details": [
        ("Can you look up my account?", "email"), ("How many loyalty points do I have?", "email"),
        ("What details do you have on my profile?", "email"), ("When did I sign up?", "email"),
    ],
    "update_account_email": [
        ("I want to change the email on {current_email}.", "new_email"),
        ("Please update the email for {current_email}.", "new_email"),
        ("{current_email} is my old address, I need to change it.", "new_email"),
        ("I have a new email address to put on my account, {current_email}.", "new_email"),
    ],
    "reset_password": [
        ("I forgot my password.", "email"), ("I can't log in, please reset my password.", "email"),
        ("Send me a password reset link.", "email"), ("Locked out of my account, help!", "email"),
    ],
    "apply_discount_code": [
        ("Please apply {code} to my order.", "order_id"), ("Can I use {code}?", "order_id"),
        ("I have a promo code for {order_id}.", "code"),
        ("I forgot to add a coupon to {order_id}.", "code"),
    ],
    "list_recent_orders": [
        ("Show me my recent orders.", "email"), ("What did I buy lately?", "email"),
        ("List my last {limit} orders.", "email"), ("I need my order history.", "email"),
    ],
    "escalate_to_human": [
        ("I want to talk to a human.", "issue"), ("Get me a real person.", "issue"),
        ("Transfer me to an agent please.", "issue"), ("Can I speak to a manager?", "issue"),
    ],
    "schedule_callback": [
        ("Can someone call me {time_window} on {date}?", "phone"),
        ("I'd like a callback on {date} {time_window}.", "phone"),
        ("Please call me at {phone}.", "when"), ("Can an agent phone me? My number is {phone}.", "when"),
    ],
}

FOLLOWUPS: dict[str, list[str]] = {
    "order_id": ["It's {order_id}.", "{order_id}", "Sure, it's {order_id}.", "The order number is {order_id}.",
                 "Oh right, {order_id}.", "order {order_id}", "Sorry, {order_id}.", "I think it's {order_id}."],
    "amount": ["{amount}", "{amount}, please.", "It was {amount}.", "I paid {amount} for it.",
               "Refund {amount}.", "The full {amount}."],
    "return_reason": ["It's because {return_reason}.", "{return_reason}", "Well, {return_reason}.",
                      "Basically {return_reason}."],
    "address": ["{street}, {city} {postal_code}", "It's {street}, {city}, {postal_code}.",
                "New address is {street}, {city} {postal_code}.", "Send it to {street}, {city} {postal_code}.",
                "{street} in {city}, zip {postal_code}."],
    "query": ["{query}", "I'm after {query}.", "Looking for {query}.", "Some {query}.", "{query}, please."],
    "sku": ["{sku}", "It's {sku}.", "The item number is {sku}.", "SKU is {sku}", "Item {sku}."],
    "email": ["{email}", "It's {email}.", "My email is {email}.", "I use {email}.", "Sure: {email}"],
    "new_email": ["{new_email}", "Please use {new_email}.", "Change it to {new_email}.",
                  "The new one is {new_email}."],
    "code": ["{code}", "The code is {code}.", "It's {code}.", "Code {code}."],
    "issue": ["It's about {issue}.", "Regarding {issue}.", "I need help with {issue}.",
              "It's {issue}.", "About {issue}."],
    "phone": ["{phone}", "You can reach me at {phone}.", "My number is {phone}.", "Call {phone}."],
    "when": ["{date}, {time_window}.", "{date} {time_window} works.", "How about {date} {time_window}?",
             "Let's do {date}, {time_window}."],
}

ASKS: dict[str, list[str]] = {
    "order_id": ["Sure, what's your order number? It starts with ORD- followed by six digits.",
                 "I can help with that. Could you share the order number (ORD- and six digits)?",
                 "Happy to check. Which order is it? Please give me the order id."],
    "amount": ["How much should I refund for that order?",
               "Sure. What amount should be refunded?"],
    "return_reason": ["What's the reason for the return: damaged, wrong item, wrong size, not as described, or no longer needed?",
                      "Sure. Why are you returning it?"],
    "address": ["What's the new address? Please include street, city and ZIP code.",
                "Sure, what street, city and ZIP code should it go to?"],
    "query": ["Sure, what are you looking for?", "Happy to help. What product should I search for?"],
    "sku": ["Which item do you mean? Please share the SKU (SKU- followed by five digits).",
            "Could you give me the item's SKU? It's on the product page."],
    "email": ["Sure. What's the email address on your account?",
              "I can help. Which email is the account registered under?"],
    "new_email": ["What new email address should I use?", "Sure, what's the new email?"],
    "code": ["Sure, what's the code?", "Which discount code would you like to apply?"],
    "issue": ["I can connect you with a person. What's the issue, so I can pass it along?",
              "Sure. Briefly, what do you need help with?"],
    "phone": ["Sure. What phone number should we call?", "Which number should the agent call?"],
    "when": ["Which date, and morning, afternoon or evening?",
             "Sure. What day and time of day work best for you?"],
}
# Missing group -> template fields it supplies.
GROUP_FIELDS = {"address": ["street", "city", "postal_code"], "when": ["date", "time_window"]}

MULTI_TEMPLATES: dict[str, list[str]] = {
    "status_refund": [
        "Can you check {order_id} and refund me {amount} if it was delivered?",
        "Please look at order {order_id}; if it arrived, I'd like {amount} back because {refund_reason}.",
        "{order_id} - was it delivered? If so, refund {amount}.",
        "If {order_id} shows delivered, please issue a {amount} refund.",
        "Check whether {order_id} was delivered and then refund {amount} {refund_method}.",
        "Since {refund_reason}, refund {amount} on {order_id}, but first confirm it was delivered.",
    ],
    "status_track": [
        "Has {order_id} shipped? If so, where is it now?",
        "Check if {order_id} went out, and track it if it did.",
        "Is order {order_id} on its way? I'd like tracking too.",
        "What's the status of {order_id}, and where's the package?",
        "If {order_id} has shipped, please track it for me.",
    ],
    "status_cancel": [
        "If {order_id} hasn't shipped yet, please cancel it.",
        "Check {order_id} and cancel it if it's still processing.",
        "Can you see whether {order_id} is still processing? If yes, cancel it, {cancel_reason}.",
        "Cancel {order_id} if it's not out the door yet.",
        "{cancel_reason}, so if {order_id} hasn't shipped please cancel it.",
    ],
    "status_return": [
        "{order_id} arrived but {return_reason}. Can you check it and start a return?",
        "Please confirm {order_id} was delivered and set up a return; {return_reason}.",
        "Look up {order_id} and start a return, {return_reason}.",
        "Check {order_id} for me - {return_reason}, so I want to send it back.",
        "If {order_id} shows delivered, start a return because {return_reason}.",
    ],
    "status_discount": [
        "Is {order_id} still processing? If so, apply code {code}.",
        "Check {order_id} and add {code} if it's not too late.",
        "If {order_id} hasn't shipped, can you use {code} on it?",
        "See if {order_id} can still take the promo {code}.",
        "Look up {order_id}, and if possible apply {code}.",
    ],
    "list_track": [
        "Where's my most recent order? My email is {email}.",
        "Can you find my latest order and track it? I use {email}.",
        "I don't have my order number, but my email is {email}. Where is my last package?",
        "Track my newest order please, account {email}.",
        "{email} - can you see where my latest order is?",
    ],
    "search_availability": [
        "Do you have {query} in size {size}?",
        "Find me {query} and check if size {size} is in stock.",
        "I want {query}, size {size}. Is one available?",
        "Look for {query} and see whether the top result comes in {size}.",
        "Any {query} in {size} in stock?",
    ],
    "account_update": [
        "Please check my account {current_email} and change its email to {new_email}.",
        "Can you find the account under {current_email}? I want to switch it to {new_email}.",
        "Look up {current_email} and update the email to {new_email}.",
        "I think my account is {current_email}; if so, move it to {new_email}.",
        "Verify the account {current_email} exists, then set the email to {new_email}.",
    ],
    "account_reset": [
        "I can't log in. My email is {email}; can you check my account and send a reset link?",
        "Please verify my account {email} and reset my password.",
        "Look up {email} and send me a password reset.",
        "Is there an account under {email}? If so, reset the password.",
        "Check my account {email} - I need to reset my password {method}.",
    ],
}

ERROR_TEMPLATES: dict[str, list[str]] = {
    "alt_order": [
        "Where is my order? It's {order_id}, or maybe {order_id_b}, I'm not sure.",
        "Can you check {order_id}? If that's wrong, try {order_id_b}.",
        "My order number is either {order_id} or {order_id_b}. What's the status?",
        "I think the order is {order_id}, but it could be {order_id_b}. Any update?",
        "Status for {order_id} please (or {order_id_b}, I mix them up).",
    ],
    "alt_email": [
        "Look up my account, it's {email}, or maybe {email_b}.",
        "I'm {email}, though I may have signed up with {email_b}. Can you find my account?",
        "Check my account: {email} or {email_b}.",
        "Pull up my profile. Try {email} first, then {email_b}.",
        "My account email is {email}, unless it's the old one, {email_b}.",
    ],
    "alt_code": [
        "Apply {code} to {order_id}, or {code_b} if that one doesn't work.",
        "Can you use {code} on {order_id}? Backup code is {code_b}.",
        "Try code {code} on order {order_id}; if not, {code_b}.",
        "I have two codes, {code} and {code_b}. Please put one on {order_id}.",
        "Use {code} for {order_id}, and if it fails use {code_b}.",
    ],
    "alt_window": [
        "Call me at {phone} on {date} {time_window}, or {time_window_b} if that's full.",
        "Book a callback to {phone} for {date}, {time_window}; {time_window_b} also works.",
        "Can someone ring {phone} on {date}? Ideally {time_window}, otherwise {time_window_b}.",
        "Schedule a call on {date} {time_window} or {time_window_b} at {phone}.",
        "{phone}, on {date} - {time_window} is best, {time_window_b} is fine too.",
    ],
}

REFUSAL_PROMPTS: dict[str, list[str]] = {
    "weather": ["What's the weather going to be like tomorrow?", "Will it rain this weekend in Denver?",
                "Is it going to snow in the mountains on Friday?", "How hot will it get today?",
                "What's the forecast for my camping trip next week?"],
    "joke": ["Tell me a joke.", "Can you tell me something funny?", "Know any good puns about camping?",
             "Make me laugh, I'm bored.", "Write me a limerick about hiking boots."],
    "coding": ["Can you help me fix my Python code?", "How do I reverse a list in JavaScript?",
               "Write a SQL query that counts users by country.", "Why does my React app keep crashing?",
               "Explain recursion with an example in Java."],
    "legal": ["Can I sue my landlord for not fixing the heater?", "Is it legal to fly a drone over a national park?",
              "Do I need a lawyer for a small claims case?", "How do I write a will?",
              "What are my rights if my employer doesn't pay overtime?"],
    "medical": ["I twisted my ankle, should I see a doctor?", "What should I take for altitude sickness?",
                "How do I treat a bee sting?", "Is this rash from poison ivy?",
                "How much ibuprofen can I take at once?"],
    "competitor": ["Is REI's return policy better than yours?", "Can you recommend a Patagonia jacket?",
                   "Where can I buy a North Face tent cheaper?", "Do you price match Amazon?",
                   "Which is better, Columbia or Arc'teryx boots?"],
    "general": ["Who won the World Cup in 2018?", "What's the capital of Australia?",
                "How far is the moon from Earth?", "Who wrote Pride and Prejudice?",
                "How many bones are in the human body?"],
    "homework": ["Solve 3x + 7 = 22 for me.", "Can you write my history essay on the Civil War?",
                 "What's the derivative of x squared times sine x?", "Summarize chapter 4 of my biology textbook.",
                 "Help me with my chemistry homework on moles."],
    "travel": ["Book me a flight to Seattle next Friday.", "Can you reserve a campsite at Yosemite?",
               "Find me a hotel in Moab for the weekend.", "What's the best hiking trail in Colorado?",
               "Rent me a car in Salt Lake City."],
    "finance": ["Should I buy Tesla stock?", "Is bitcoin a good investment right now?",
                "How do I file my taxes?", "Can you lower my credit card interest rate?",
                "What's a good savings account?"],
    "creative": ["Write a poem about the ocean.", "Can you write a birthday message for my mom?",
                 "Draft a cover letter for a marketing job.", "Translate 'good morning' into Japanese.",
                 "Write a short story about a dragon."],
    "personal": ["My girlfriend broke up with me, what should I do?", "What should I cook for dinner tonight?",
                 "Can you help me plan my wedding?", "What movie should I watch tonight?",
                 "How do I get my cat to stop scratching the couch?"],
}
REFUSAL_TOPICS = {
    "weather": "weather forecasts", "joke": "jokes", "coding": "coding questions",
    "legal": "legal advice", "medical": "medical advice", "competitor": "other stores' products",
    "general": "general trivia", "homework": "homework", "travel": "travel bookings",
    "finance": "financial advice", "creative": "writing requests", "personal": "personal advice",
}
REFUSAL_REPLIES = [
    "Sorry, I can't help with {topic}. I can help with your Acme Outfitters orders, shipping, returns, refunds, account or products.",
    "I'm only able to help with Acme Outfitters orders, returns, refunds, accounts and products, so I can't help with "
    "{topic}. Is there anything about an order I can do?",
    "That's outside what I can do here; I don't handle {topic}. I'm happy to help with an order, a return, a refund or your account.",
    "Sorry, {topic} isn't something I can help with. If you have a question about an Acme Outfitters order or product, just ask!",
]

# --------------------------------------------------------------------------
# Other domains and per-conversation tool lists
# --------------------------------------------------------------------------
# An agent that sees the same 15 tools in the same order in every conversation learns a topic, not
# how to read a tool list. So every conversation carries its own `tools`: half the Acme ones the full
# list in its usual order (the deployed agent), the rest a shuffled subset that always holds the
# tools the conversation calls, their neighbours (the tools they are confused with) and sometimes
# tools of other domains. Conversations of other domains (a general assistant, or none) call tools
# the agent never has; some ask for something no listed tool does, or for an Acme tool that is not
# in the list, and the right reply says so instead of calling.

GENERIC_SYSTEM_PROMPTS = [
    None,  # no system message
    "You are a helpful assistant.",
    "You are a helpful assistant with access to functions. Call them when they help answer the user.",
    "Answer the user's request. Use one of the provided functions when it fits; otherwise reply in text.",
]

# The tools each Acme tool is confused with (most of a tuned model's wrong tools are these).
NEIGHBOURS = {
    "check_order_status": ["track_shipment", "list_recent_orders"],
    "track_shipment": ["check_order_status"],
    "cancel_order": ["initiate_return", "submit_refund"],
    "initiate_return": ["submit_refund", "cancel_order"],
    "submit_refund": ["initiate_return", "escalate_to_human"],
    "update_shipping_address": ["update_account_email"],
    "search_products": ["check_product_availability"],
    "check_product_availability": ["search_products"],
    "get_account_details": ["list_recent_orders", "update_account_email"],
    "update_account_email": ["get_account_details", "reset_password"],
    "reset_password": ["update_account_email", "get_account_details"],
    "apply_discount_code": ["submit_refund"],
    "list_recent_orders": ["get_account_details", "check_order_status"],
    "escalate_to_human": ["schedule_callback"],
    "schedule_callback": ["escalate_to_human"],
}

# What each Acme tool does, as a reply that names a missing tool puts it.
CAPABILITIES = {
    "check_order_status": "check an order's status",
    "track_shipment": "track a shipment",
    "cancel_order": "cancel an order",
    "initiate_return": "start a return",
    "submit_refund": "issue a refund",
    "update_shipping_address": "change a delivery address",
    "search_products": "search the catalog",
    "check_product_availability": "check stock",
    "get_account_details": "look up an account",
    "update_account_email": "change an account's email",
    "reset_password": "reset a password",
    "apply_discount_code": "apply a discount code",
    "list_recent_orders": "list recent orders",
    "escalate_to_human": "hand the case to a colleague",
    "schedule_callback": "book a callback",
}


def _num(desc: str, **kw) -> dict:
    return {"type": "number", "description": desc, **kw}


def _int(desc: str, **kw) -> dict:
    return {"type": "integer", "description": desc, **kw}


def _s(desc: str, **kw) -> dict:
    return {"type": "string", "description": desc, **kw}


# Other domains' tools: names (one is picked per conversation, so that a call copies its name from
# the list), description, parameters with descriptions (as public function-calling sets write them),
# required, templates, and what the tool does. Template fields: see `_other_slot`.
OTHER_TOOLS: list[dict] = [
    {"names": ["get_current_weather", "weather_now", "fetch_weather"], "does": "get the weather",
     "description": "Get the current weather in a city.",
     "params": {"location": _s("The city, e.g. Denver"), "unit": _s("Temperature unit", enum=["celsius", "fahrenheit"])},
     "required": ["location"],
     "templates": ["What's the weather in {city} right now?", "How warm is it in {city} at the moment?",
                   "Tell me the current weather in {city} in {unit}.", "Is it raining in {city}?",
                   "Current conditions for {city}, please, in {unit}.", "What's it like outside in {city} today?"]},
    {"names": ["convert_currency", "currency_convert", "exchange_money"], "does": "convert currencies",
     "description": "Convert an amount of money from one currency to another.",
     "params": {"amount": _num("Amount to convert"), "from_currency": _s("ISO code, e.g. USD"),
                "to_currency": _s("ISO code, e.g. EUR")},
     "required": ["amount", "from_currency", "to_currency"],
     "templates": ["Convert {amount} {from_currency} to {to_currency}.", "How much is {amount} {from_currency} in {to_currency}?",
                   "I have {amount} {from_currency}; what's that in {to_currency}?",
                   "Change {amount} {from_currency} into {to_currency} for me.", "{amount} {from_currency} to {to_currency}?"]},
    {"names": ["calculate_triangle_area", "triangle_area", "geometry_triangle_area"], "does": "compute a triangle's area",
     "description": "Area of a triangle from its base and height.",
     "params": {"base": _num("Base length"), "height": _num("Height")},
     "required": ["base", "height"],
     "templates": ["What's the area of a triangle with base {base} and height {height}?",
                   "Find the area of a triangle: base {base}, height {height}.",
                   "A triangle has a base of {base} cm and a height of {height} cm. How big is its area?",
                   "Calculate the triangle area for base {base} and height {height}."]},
    {"names": ["get_stock_price", "stock_quote", "fetch_share_price"], "does": "look up stock prices",
     "description": "Latest trading price of a stock.",
     "params": {"ticker": _s("Stock ticker symbol, e.g. AAPL")},
     "required": ["ticker"],
     "templates": ["What is {ticker} trading at?", "Get me the latest price of {ticker}.",
                   "How much is one share of {ticker} right now?", "Stock price for {ticker}, please."]},
    {"names": ["translate_text", "translate", "text_translation"], "does": "translate text",
     "description": "Translate text into another language.",
     "params": {"text": _s("The text to translate"), "target_language": _s("Language to translate into")},
     "required": ["text", "target_language"],
     "templates": ["Translate \"{phrase}\" into {language}.", "How do you say \"{phrase}\" in {language}?",
                   "Please put \"{phrase}\" into {language}.", "What's \"{phrase}\" in {language}?"]},
    {"names": ["find_restaurants", "restaurant_search", "search_restaurants"], "does": "find restaurants",
     "description": "Find restaurants in a city, optionally by cuisine.",
     "params": {"location": _s("City"), "cuisine": _s("Type of food, e.g. Thai")},
     "required": ["location"],
     "templates": ["Find me a {cuisine} restaurant in {city}.", "Where can I eat in {city}?",
                   "Any good {cuisine} places in {city}?", "Restaurants in {city}, please.",
                   "I'm hungry in {city}; what's around?"]},
    {"names": ["get_flight_status", "flight_status", "check_flight"], "does": "check flights",
     "description": "Status of a flight by its number.",
     "params": {"flight_number": _s("Airline code and number, e.g. UA123")},
     "required": ["flight_number"],
     "templates": ["Is flight {flight} on time?", "What's the status of {flight}?",
                   "Has {flight} landed yet?", "Check flight {flight} for me."]},
    {"names": ["calculate_bmi", "bmi_calculator", "body_mass_index"], "does": "compute a BMI",
     "description": "Body mass index from weight and height.",
     "params": {"weight_kg": _num("Weight in kilograms"), "height_cm": _num("Height in centimetres")},
     "required": ["weight_kg", "height_cm"],
     "templates": ["What's my BMI? I weigh {weight} kg and I'm {height} cm tall.",
                   "Calculate BMI for {weight} kg and {height} cm.",
                   "I'm {height} cm and {weight} kg; what's my body mass index?"]},
    {"names": ["compound_interest", "calculate_compound_interest", "interest_calculator"], "does": "compute interest",
     "description": "Value of a deposit with yearly compound interest.",
     "params": {"principal": _num("Initial amount"), "rate": _num("Yearly interest rate as a decimal, e.g. 0.05"),
                "years": _int("Number of years")},
     "required": ["principal", "rate", "years"],
     "templates": ["If I invest {principal} at {rate} yearly for {years} years, what do I end up with?",
                   "Compound interest on {principal}, rate {rate}, {years} years?",
                   "What will {principal} grow to in {years} years at an annual rate of {rate}?"]},
    {"names": ["get_movie_showtimes", "movie_showtimes", "cinema_times"], "does": "find movie showtimes",
     "description": "Showtimes of a movie in a city.",
     "params": {"movie": _s("Movie title"), "location": _s("City")},
     "required": ["movie", "location"],
     "templates": ["When is {movie} playing in {city}?", "Showtimes for {movie} in {city}, please.",
                   "Where can I see {movie} in {city} tonight?"]},
    {"names": ["get_population", "country_population", "population_lookup"], "does": "look up populations",
     "description": "Population of a country, optionally in a given year.",
     "params": {"country": _s("Country name"), "year": _int("Year")},
     "required": ["country"],
     "templates": ["What's the population of {country}?", "How many people lived in {country} in {year}?",
                   "Population of {country} in {year}?", "How many people live in {country}?"]},
    {"names": ["math_gcd", "greatest_common_divisor", "gcd"], "does": "compute a greatest common divisor",
     "description": "Greatest common divisor of two integers.",
     "params": {"a": _int("First integer"), "b": _int("Second integer")},
     "required": ["a", "b"],
     "templates": ["What's the greatest common divisor of {a} and {b}?", "GCD of {a} and {b}?",
                   "Find the highest common factor of {a} and {b}."]},
    {"names": ["search_recipes", "recipe_finder", "find_recipes"], "does": "find recipes",
     "description": "Find recipes with an ingredient, optionally under a time limit.",
     "params": {"ingredient": _s("Main ingredient"), "max_minutes": _int("Longest total time in minutes")},
     "required": ["ingredient"],
     "templates": ["Give me a recipe with {ingredient}.", "What can I cook with {ingredient} in under {minutes} minutes?",
                   "Find recipes that use {ingredient}, {minutes} minutes max.", "Any ideas for dinner with {ingredient}?"]},
    {"names": ["get_distance", "distance_between", "route_distance"], "does": "measure distances",
     "description": "Driving distance between two cities.",
     "params": {"origin": _s("Start city"), "destination": _s("End city"), "unit": _s("Unit", enum=["km", "miles"])},
     "required": ["origin", "destination"],
     "templates": ["How far is it from {city} to {city2}?", "Distance from {city} to {city2} in {dist_unit}?",
                   "How many {dist_unit} is the drive from {city} to {city2}?", "What's the drive from {city} to {city2}?"]},
    {"names": ["book_hotel", "reserve_hotel", "hotel_booking"], "does": "book hotels",
     "description": "Book a hotel room.",
     "params": {"city": _s("City"), "check_in": _s("Date, YYYY-MM-DD", pattern=DATE_RE), "nights": _int("Number of nights", minimum=1)},
     "required": ["city", "check_in", "nights"],
     "templates": ["Book a hotel in {city} from {date} for {nights} nights.", "I need a room in {city}, checking in {date}, {nights} nights.",
                   "Reserve {nights} nights in {city} starting {date}."]},
    {"names": ["get_time_zone", "timezone_lookup", "city_time_zone"], "does": "look up time zones",
     "description": "Time zone of a city.",
     "params": {"city": _s("City name")},
     "required": ["city"],
     "templates": ["What time zone is {city} in?", "Which time zone does {city} use?", "Time zone for {city}?"]},
    {"names": ["calculate_circle_area", "circle_area", "area_of_circle"], "does": "compute a circle's area",
     "description": "Area of a circle from its radius.",
     "params": {"radius": _num("Radius of the circle"), "unit": _s("Unit of length, e.g. cm")},
     "required": ["radius"],
     "templates": ["What's the area of a circle with a radius of {radius}?", "Area of a circle, radius {radius} {length_unit}?",
                   "Find the area of a circle whose radius is {radius} {length_unit}.",
                   "A round table has a radius of {radius}; what is its area?"]},
    {"names": ["calculate_average_speed", "average_speed", "speed_from_distance"], "does": "compute an average speed",
     "description": "Average speed from a distance and the time it took.",
     "params": {"distance_km": _num("Distance in kilometres"), "hours": _num("Time taken in hours")},
     "required": ["distance_km", "hours"],
     "templates": ["I drove {km} km in {hours} hours. What was my average speed?",
                   "Average speed for {km} km covered in {hours} hours?",
                   "A train travels {km} kilometres in {hours} hours; how fast is that on average?"]},
    {"names": ["convert_temperature", "temperature_converter", "temp_convert"], "does": "convert temperatures",
     "description": "Convert a temperature between Celsius, Fahrenheit and Kelvin.",
     "params": {"value": _num("The temperature to convert"),
                "from_unit": _s("Its scale", enum=["celsius", "fahrenheit", "kelvin"]),
                "to_unit": _s("The scale to convert to", enum=["celsius", "fahrenheit", "kelvin"])},
     "required": ["value", "from_unit", "to_unit"],
     "templates": ["Convert {temp} degrees {from_scale} to {to_scale}.", "What is {temp} {from_scale} in {to_scale}?",
                   "{temp} degrees {from_scale}, how much is that in {to_scale}?"]},
    {"names": ["get_team_standings", "league_standings", "team_rank"], "does": "look up league standings",
     "description": "A team's position in its league table for a season.",
     "params": {"team": _s("Team name"), "season": _s("Season, e.g. 2022-23")},
     "required": ["team"],
     "templates": ["Where do the {team} stand in the league?", "What's the {team}'s position in the {season} season?",
                   "How did the {team} finish in {season}?", "League table position of the {team}, please."]},
    {"names": ["get_player_stats", "player_statistics", "athlete_stats"], "does": "look up player statistics",
     "description": "Season statistics of a player.",
     "params": {"player": _s("Player's full name"), "season": _s("Season, e.g. 2022-23")},
     "required": ["player"],
     "templates": ["Show me {player}'s stats.", "How many points did {player} score in {season}?",
                   "Get {player}'s statistics for the {season} season.", "What are {player}'s numbers this season?"]},
    {"names": ["calculate_percentage", "percentage_of", "percent_calculator"], "does": "compute percentages",
     "description": "What percentage one number is of another.",
     "params": {"part": _num("The part"), "whole": _num("The whole")},
     "required": ["part", "whole"],
     "templates": ["What percentage is {part} of {whole}?", "{part} out of {whole} is what percent?",
                   "I scored {part} out of {whole}; what's that as a percentage?"]},
    {"names": ["define_word", "dictionary_lookup", "word_definition"], "does": "define words",
     "description": "Dictionary definition of an English word.",
     "params": {"word": _s("The word to define")},
     "required": ["word"],
     "templates": ["What does \"{word}\" mean?", "Define the word {word}.", "Give me the definition of {word}.",
                   "What's the meaning of {word}?"]},
    {"names": ["count_calories", "calorie_lookup", "food_calories"], "does": "count calories",
     "description": "Calories in a weight of a food.",
     "params": {"food": _s("The food"), "grams": _num("Weight in grams")},
     "required": ["food", "grams"],
     "templates": ["How many calories are in {grams} g of {food}?", "Calories in {grams} grams of {food}?",
                   "I ate {grams} grams of {food}. How many calories is that?"]},
    {"names": ["get_public_holidays", "holiday_calendar", "list_holidays"], "does": "list public holidays",
     "description": "Public holidays of a country in a year.",
     "params": {"country": _s("Country name"), "year": _int("Year")},
     "required": ["country", "year"],
     "templates": ["What are the public holidays in {country} in {year}?", "List {country}'s holidays for {year}.",
                   "Which days are national holidays in {country} in {year}?"]},
]
# A namespace per tool: some conversations list a tool as `namespace.name`, as many APIs name them, so that a call
# copies the listed name whole rather than a name it remembers.
OTHER_NAMESPACES = {
    "get_current_weather": "weather", "convert_currency": "finance", "calculate_triangle_area": "geometry",
    "get_stock_price": "stocks", "translate_text": "language", "find_restaurants": "dining", "get_flight_status": "flights",
    "calculate_bmi": "health", "compound_interest": "finance", "get_movie_showtimes": "cinema", "get_population": "census",
    "math_gcd": "math", "search_recipes": "cooking", "get_distance": "maps", "book_hotel": "hotels", "get_time_zone": "clock",
    "calculate_circle_area": "geometry", "calculate_average_speed": "physics", "convert_temperature": "units",
    "get_team_standings": "sports", "get_player_stats": "sports", "calculate_percentage": "math", "define_word": "dictionary",
    "count_calories": "nutrition", "get_public_holidays": "calendar",
}
NAMESPACED_SHARE = 0.3

OTHER_VALUES = {
    "from_currency": ["USD", "EUR", "GBP", "JPY", "CAD", "AUD", "CHF", "MXN", "INR", "SEK"],
    "ticker": ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "GOOGL", "META", "NFLX", "IBM", "ORCL", "INTC", "AMD"],
    "phrase": ["good morning", "where is the station", "thank you very much", "I am lost", "how much is this",
               "see you tomorrow", "the bill, please", "happy birthday", "I love hiking", "is it far"],
    "language": ["French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Korean", "Dutch"],
    "cuisine": ["Thai", "Italian", "Mexican", "Indian", "Japanese", "Greek", "Korean", "vegan", "Ethiopian"],
    "movie": ["Dune", "Inception", "The Matrix", "Oppenheimer", "Barbie", "Arrival", "Up", "Jaws", "Heat", "Coco"],
    "country": ["France", "Brazil", "Japan", "Kenya", "Canada", "India", "Norway", "Peru", "Vietnam", "Egypt"],
    "ingredient": ["chickpeas", "salmon", "spinach", "tofu", "mushrooms", "lentils", "eggs", "chicken", "pumpkin"],
    "unit": ["celsius", "fahrenheit"],
    "dist_unit": ["km", "miles"],
    "length_unit": ["cm", "m", "inches", "mm"],
    "from_scale": ["celsius", "fahrenheit", "kelvin"],
    "team": ["Boston Celtics", "Chicago Bulls", "Arsenal", "Real Madrid", "Green Bay Packers", "New York Yankees",
             "Toronto Maple Leafs", "Bayern Munich", "Denver Nuggets", "Liverpool"],
    "season": ["2021-22", "2022-23", "2023-24", "2019-20"],
    "player": ["Nikola Jokic", "Lionel Messi", "Serena Williams", "Patrick Mahomes", "Erling Haaland", "Stephen Curry",
               "Shohei Ohtani", "Connor McDavid", "Megan Rapinoe", "LeBron James"],
    "word": ["serendipity", "ephemeral", "ubiquitous", "pragmatic", "meticulous", "resilient", "candid", "eloquent"],
    "food": ["rice", "banana", "cheddar", "almonds", "oatmeal", "avocado", "salmon", "bread", "apple", "pasta"],
}

# Whole-number fields of other-domain templates: [low, high).
OTHER_NUMBERS = {"radius": (1, 80), "km": (20, 900), "hours": (1, 12), "temp": (-20, 120), "part": (1, 90),
                 "whole": (100, 400), "grams": (20, 500)}

# A field's argument name per tool, where it differs from the field name.
OTHER_FIELD_ARGS = {"city2": "destination", "flight": "flight_number",
                    "weight": "weight_kg", "height": "height_cm", "minutes": "max_minutes", "dist_unit": "unit",
                    "date": "check_in", "language": "target_language", "phrase": "text", "length_unit": "unit",
                    "km": "distance_km", "temp": "value", "from_scale": "from_unit", "to_scale": "to_unit"}


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


def other_tool_schema(tool: dict, name: str) -> dict:
    """The OpenAI tools entry of an other-domain tool under one of its names."""
    return {"type": "function", "function": {
        "name": name, "description": tool["description"],
        "parameters": {"type": "object", "properties": tool["params"], "required": tool["required"]}}}


def namespaced(tool: dict, name: str) -> str:
    return f"{OTHER_NAMESPACES[tool['names'][0]]}.{name}"


# Every name an other-domain tool is listed under, plain or namespaced
OTHER_BY_NAME = {full: t for t in OTHER_TOOLS for n in t["names"] for full in (n, namespaced(t, n))}
for _full, _t in OTHER_BY_NAME.items():
    SCHEMAS[_full] = other_tool_schema(_t, _full)["function"]["parameters"]

TOOL_BY_NAME = {t["function"]["name"]: t for t in TOOLS}
# Off-topic questions that an other-domain tool would answer: never asked beside that tool.
REFUSAL_CONFLICTS = {
    "weather": {"get_current_weather"}, "travel": {"book_hotel", "get_flight_status", "get_distance"},
    "finance": {"get_stock_price", "convert_currency", "compound_interest"}, "creative": {"translate_text"},
    "personal": {"search_recipes", "get_movie_showtimes", "find_restaurants"},
    "homework": {"math_gcd", "calculate_triangle_area", "calculate_circle_area", "calculate_percentage",
                 "calculate_average_speed", "define_word"},
    "general": {"get_population", "get_distance", "get_time_zone", "get_team_standings", "get_player_stats"},
    "medical": {"calculate_bmi", "count_calories"},
}

# Other-domain tools a request is easily mistaken for (shared argument names or topic): a request for
# one beside only these is the near miss that teaches a model to read the list rather than guess.
OTHER_NEIGHBOURS = {
    "get_current_weather": ["get_time_zone", "get_distance", "convert_temperature"],
    "convert_currency": ["get_stock_price", "compound_interest"],
    "calculate_triangle_area": ["calculate_bmi", "math_gcd", "calculate_circle_area"],
    "get_stock_price": ["convert_currency", "compound_interest"],
    "translate_text": ["get_time_zone", "get_population"],
    "find_restaurants": ["search_recipes", "book_hotel"],
    "get_flight_status": ["book_hotel", "get_distance"],
    "calculate_bmi": ["calculate_triangle_area", "compound_interest"],
    "compound_interest": ["convert_currency", "get_stock_price"],
    "get_movie_showtimes": ["find_restaurants", "book_hotel"],
    "get_population": ["get_time_zone", "get_distance"],
    "math_gcd": ["calculate_triangle_area", "compound_interest"],
    "search_recipes": ["find_restaurants", "calculate_bmi"],
    "get_distance": ["get_flight_status", "get_time_zone"],
    "book_hotel": ["get_flight_status", "find_restaurants"],
    "get_time_zone": ["get_current_weather", "get_population", "get_public_holidays"],
    "calculate_circle_area": ["calculate_triangle_area", "calculate_percentage"],
    "calculate_average_speed": ["get_distance", "get_flight_status"],
    "convert_temperature": ["get_current_weather", "convert_currency"],
    "get_team_standings": ["get_player_stats", "get_stock_price"],
    "get_player_stats": ["get_team_standings", "get_population"],
    "calculate_percentage": ["compound_interest", "math_gcd", "calculate_circle_area"],
    "define_word": ["translate_text", "get_population"],
    "count_calories": ["search_recipes", "calculate_bmi"],
    "get_public_holidays": ["get_time_zone", "get_population"],
}

NONE_FIT_REPLIES = [
    "I can't do that with the functions I have here: they only {caps}.",
    "None of the available functions can help with that; they {caps}.",
    "Sorry, there's no function here for that. I can {caps}, if that helps.",
]
ABSENT_REPLIES = [
    "Sorry, I can't {cap} right now: that isn't one of the tools I have in this chat. I can {caps}.",
    "I don't have a way to {cap} here, so I can't do that for you. I can {caps}, though.",
    "That's not something I can do at the moment: I have no tool to {cap}. I can still {caps}.",
]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# --------------------------------------------------------------------------
# Tool results and assistant texts
# --------------------------------------------------------------------------

CARRIERS = ["UPS", "FedEx", "USPS", "DHL"]
STATUS_TEXT = {"processing": "still processing", "shipped": "shipped", "delivered": "delivered",
               "cancelled": "cancelled"}


def _past_date(rng: random.Random, days: int = 60) -> str:
    return (TODAY - _dt.timedelta(days=rng.randrange(1, days))).isoformat()


def _future_date(rng: random.Random, days: int = 10) -> str:
    return (TODAY + _dt.timedelta(days=rng.randrange(1, days))).isoformat()


def _track_no(rng: random.Random) -> str:
    return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))


def tool_result(tool: str, args: dict, pools: Pools, rng: random.Random, ctx: dict) -> dict:
    """A plausible successful result for a call.  ``ctx`` can force fields."""
    if tool == "check_order_status":
        status = ctx.get("status") or rng.choice(["processing", "shipped", "shipped", "delivered", "delivered"])
        res: dict[str, Any] = {"order_id": args["order_id"], "status": status, "placed_on": _past_date(rng),
                               "total": _amount_value(pools.cents(rng, 1500, 60000))}
        if status == "delivered":
            res["delivered_on"] = _past_date(rng, 10)
        if ctx.get("total_at_least") is not None:
            res["total"] = max(res["total"], ctx["total_at_least"])
        if args.get("include_items"):
            k = rng.randrange(1, 4)
            res["items"] = [{"name": pools.product(rng)[0], "quantity": rng.randrange(1, 3)} for _ in range(k)]
        return res
    if tool == "track_shipment":
        status = rng.choice(["in_transit", "in_transit", "out_for_delivery", "delivered"])
        res = {"order_id": args["order_id"], "carrier": rng.choice(CARRIERS), "tracking_number": _track_no(rng),
               "status": status}
        if status == "delivered":
            res["delivered_on"] = _past_date(rng, 5)
        else:
            res["estimated_delivery"] = _future_date(rng, 7)
        if args.get("include_history"):
            res["history"] = [{"date": _past_date(rng, 8), "event": e}
                              for e in ["Label created", "Picked up", "Arrived at hub"][: rng.randrange(2, 4)]]
            res["history"].sort(key=lambda x: x["date"])
        return res
    if tool == "cancel_order":
        return {"order_id": args["order_id"], "cancelled": True,
                "refund_amount": _amount_value(pools.cents(rng, 1500, 40000))}
    if tool == "initiate_return":
        rma = pools.ref(rng, "RMA")
        return {"return_id": rma, "order_id": args["order_id"],
                "label_url": f"https://acme.example/returns/{rma}", "drop_off_by": _future_date(rng, 30)}
    if tool == "submit_refund":
        return {"refund_id": pools.ref(rng, "RF"), "order_id": args["order_id"], "amount": args["amount"],
                "status": "approved", "expected_in_days": rng.choice([3, 5, 7, 10])}
    if tool == "update_shipping_address":
        addr = args["street"] + (f" Apt {args['apartment']}" if "apartment" in args else "")
        return {"order_id": args["order_id"], "updated": True,
                "address": f"{addr}, {args['city']} {args['postal_code']}"}
    if tool == "search_products":
        n = rng.randrange(1, 4)
        base = args["query"]
        adj = ["Acme", "Summit", "Ridgeline", "Basecamp", "Trailhead", "Alpine", "Canyon", "Timber"]
        cap = args.get("max_price", 600)
        results = []
        for name in rng.sample(adj, n):
            price = _amount_value(rng.randrange(int(min(cap, 40) * 30), int(cap * 100)) // 100 * 100 - 1)
            results.append({"sku": pools.sku(rng), "name": f"{name} {base}", "price": price})
        return {"results": results}
    if tool == "check_product_availability":
        in_stock = ctx.get("in_stock", rng.random() < 0.75)
        res = {"sku": args["sku"]}
        if "size" in args:
            res["size"] = args["size"]
        res["in_stock"] = in_stock
        res["quantity"] = rng.randrange(1, 40) if in_stock else 0
        if "postal_code" in args:
            res["nearest_store"] = f"Acme {rng.choice(pools.cities)}" if in_stock else None
        if not in_stock:
            res["restock_date"] = _future_date(rng, 30)
        return res
    if tool == "get_account_details":
        first, last = pools.name(rng)
        return {"email": args["email"], "name": f"{first.capitalize()} {last.capitalize()}",
                "member_since": (_dt.date(2016, 1, 1) + _dt.timedelta(days=rng.randrange(3000))).isoformat(),
                "loyalty_points": rng.randrange(0, 5000), "status": "active"}
    if tool == "update_account_email":
        return {"updated": True, "email": args["new_email"]}
    if tool == "reset_password":
        return {"sent": True, "method": args.get("method", "email"), "expires_in_minutes": 30}
    if tool == "apply_discount_code":
        total = pools.cents(rng, 3000, 50000)
        disc = min(total - 100, rng.randrange(300, 5000))
        return {"order_id": args["order_id"], "code": args["code"], "applied": True,
                "discount": _amount_value(disc), "new_total": _amount_value(total - disc)}
    if tool == "list_recent_orders":
        n = min(args.get("limit", 3), rng.randrange(1, 4))
        orders = []
        dates = sorted((_past_date(rng, 90) for _ in range(n)), reverse=True)
        for i, d in enumerate(dates):
            st = ctx.get("first_status") if i == 0 and ctx.get("first_status") else rng.choice(
                ["processing", "shipped", "delivered", "delivered"])
            orders.append({"order_id": pools.order_id(rng), "placed_on": d, "status": st,
                           "total": _amount_value(pools.cents(rng, 1500, 40000))})
        return {"orders": orders}
    if tool == "escalate_to_human":
        return {"ticket_id": pools.ref(rng, "TKT"), "queue": "support",
                "expected_response": rng.choice(["within 24 hours", "within 4 hours", "within 1 business day"])}
    if tool == "schedule_callback":
        return {"confirmed": True, "reference": pools.ref(rng, "CB", 5), "date": args["date"],
                "time_window": args["time_window"]}
    raise KeyError(tool)


def final_text(tool: str, args: dict, res: dict, rng: random.Random) -> str:
    """One-sentence assistant answer summarising a successful result."""
    if tool == "check_order_status":
        s = f"Order {res['order_id']} is {STATUS_TEXT[res['status']]}"
        if res["status"] == "delivered":
            s += f"; it was delivered on {res['delivered_on']}."
        else:
            s += f" (placed on {res['placed_on']}, total {_money(res['total'])})."
        if "items" in res:
            items = ", ".join(f"{i['quantity']} x {i['name']}" for i in res["items"])
            s += f" It contains {items}."
        return s
    if tool == "track_shipment":
        if res["status"] == "delivered":
            s = f"{res['carrier']} shows order {res['order_id']} as delivered on {res['delivered_on']}."
        else:
            st = "out for delivery" if res["status"] == "out_for_delivery" else "in transit"
            s = (f"Order {res['order_id']} is {st} with {res['carrier']} (tracking {res['tracking_number']}), "
                 f"expected by {res['estimated_delivery']}.")
        if "history" in res:
            s += " Events: " + "; ".join(f"{h['date']} {h['event']}" for h in res["history"]) + "."
        return s
    if tool == "cancel_order":
        return (f"Order {res['order_id']} is cancelled, and {_money(res['refund_amount'])} will go back "
                f"to your original payment method.")
    if tool == "initiate_return":
        return (f"Your return {res['return_id']} is set up. Print the label at {res['label_url']} "
                f"and drop the package off by {res['drop_off_by']}.")
    if tool == "submit_refund":
        return (f"Done! Refund {res['refund_id']} for {_money(res['amount'])} on order {res['order_id']} "
                f"is approved and should arrive within {res['expected_in_days']} business days.")
    if tool == "update_shipping_address":
        return f"Order {res['order_id']} will now ship to {res['address']}."
    if tool == "search_products":
        items = "; ".join(f"{r['name']} ({r['sku']}, {_money(r['price'])})" for r in res["results"])
        return f"Here's what I found: {items}."
    if tool == "check_product_availability":
        size = f" in size {res['size']}" if "size" in res else ""
        if res["in_stock"]:
            s = f"Good news: {res['sku']}{size} is in stock ({res['quantity']} available)"
            return s + (f", and {res['nearest_store']} has it." if res.get("nearest_store") else ".")
        return f"Sorry, {res['sku']}{size} is out of stock; it should be back by {res['restock_date']}."
    if tool == "get_account_details":
        return (f"Your account ({res['name']}, {res['email']}) has been a member since {res['member_since']} "
                f"and has {res['loyalty_points']} loyalty points.")
    if tool == "update_account_email":
        return f"Your account email is now {res['email']}."
    if tool == "reset_password":
        via = "text message" if res["method"] == "sms" else "email"
        return f"I've sent a password reset link by {via} for {args['email']}; it expires in 30 minutes."
    if tool == "apply_discount_code":
        return (f"Code {res['code']} is applied to {res['order_id']}: you saved {_money(res['discount'])} "
                f"and the new total is {_money(res['new_total'])}.")
    if tool == "list_recent_orders":
        lst = "; ".join(f"{o['order_id']} ({o['placed_on']}, {o['status']}, {_money(o['total'])})"
                        for o in res["orders"])
        return f"Here are your recent orders: {lst}."
    if tool == "escalate_to_human":
        return (f"I've passed this to a human agent (ticket {res['ticket_id']}); "
                f"they'll get back to you {res['expected_response']}.")
    if tool == "schedule_callback":
        return (f"Your callback is booked for {res['date']} in the {res['time_window']} "
                f"(reference {res['reference']}).")
    raise KeyError(tool)


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
            oid = vals["order_id"][1]
            s_args = {"order_id": oid}
            want = {"status_refund": "delivered", "status_track": "shipped", "status_cancel": "processing",
                    "status_return": "delivered", "status_discount": "processing"}[scen]
            rctx: dict = {"status": want}
            if scen == "status_refund":
                rctx["total_at_least"] = vals["amount"][1]
            (cid,) = conv.call(("check_order_status", s_args))
            sres = tool_result("check_order_status", s_args, self.pools, rng, rctx)
            conv.result(cid, "check_order_status", sres)
            tool = {"status_refund": "submit_refund", "status_track": "track_shipment",
                    "status_cancel": "cancel_order", "status_return": "initiate_return",
                    "status_discount": "apply_discount_code"}[scen]
            args = args_from(tool, vals)
            (cid2,) = conv.call((tool, args))
            res = tool_result(tool, args, self.pools, rng, {})
            conv.result(cid2, tool, res)
            lead = {"delivered": f"Order {oid} was delivered on {sres.get('delivered_on')}.",
                    "shipped": f"Order {oid} has shipped.",
                    "processing": f"Order {oid} was still processing."}[want]
            conv.say(lead + " " + final_text(tool, args, res, rng))
            return conv
        if scen == "list_track":
            l_args = args_from("list_recent_orders", vals)
            (cid,) = conv.call(("list_recent_orders", l_args))
            lres = tool_result("list_recent_orders", l_args, self.pools, rng, {"first_status": "shipped"})
            conv.result(cid, "list_recent_orders", lres)
            latest = lres["orders"][0]["order_id"]
            t_args = {"order_id": latest}
            (cid2,) = conv.call(("track_shipment", t_args))
            res = tool_result("track_shipment", t_args, self.pools, rng, {})
            conv.result(cid2, "track_shipment", res)
            conv.say(f"Your latest order is {latest}. " + final_text("track_shipment", t_args, res, rng))
            return conv
        if scen == "search_availability":
            q_args = args_from("search_products", vals)
            (cid,) = conv.call(("search_products", q_args))
            sres = tool_result("search_products", q_args, self.pools, rng, {})
            conv.result(cid, "search_products", sres)
            top = sres["results"][0]
            a_args = {"sku": top["sku"], "size": vals["size"][1]}
            (cid2,) = conv.call(("check_product_availability", a_args))
            res = tool_result("check_product_availability", a_args, self.pools, rng, {})
            conv.result(cid2, "check_product_availability", res)
            conv.say(f"The best match is the {top['name']} at {_money(top['price'])}. "
                     + final_text("check_product_availability", a_args, res, rng))
            return conv
        if scen == "account_update":
            g_args = args_from("get_account_details", {"email": ("email", vals["current_email"][1])})
            (cid,) = conv.call(("get_account_details", g_args))
            gres = tool_result("get_account_details", g_args, self.pools, rng, {})
            conv.result(cid, "get_account_details", gres)
            u_args = args_from("update_account_email", vals)
            (cid2,) = conv.call(("update_account_email", u_args))
            res = tool_result("update_account_email", u_args, self.pools, rng, {})
            conv.result(cid2, "update_account_email", res)
            conv.say(f"I found your account, {gres['name'].split()[0]}. "
                     + final_text("update_account_email", u_args, res, rng))
            return conv
        if scen == "account_reset":
            g_args = args_from("get_account_details", {"email": vals["email"]})
            (cid,) = conv.call(("get_account_details", g_args))
            gres = tool_result("get_account_details", g_args, self.pools, rng, {})
            conv.result(cid, "get_account_details", gres)
            r_args = args_from("reset_password", vals)
            (cid2,) = conv.call(("reset_password", r_args))
            res = tool_result("reset_password", r_args, self.pools, rng, {})
            conv.result(cid2, "reset_password", res)
            conv.say(f"I found your account, {gres['name'].split()[0]}. "
                     + final_text("reset_password", r_args, res, rng))
            return conv
        raise KeyError(scen)

    def tool_error(self) -> Conv:
        conv = Conv(self.rng)
        rng = self.rng
        mode = rng.choice(["alt_order", "alt_email", "alt_code", "alt_window", "transient", "transient",
                           "refund_review", "refund_cap", "cancel_shipped", "address_shipped"])
        if mode.startswith("alt_"):
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
            (cid2,) = conv.call((tool, second))
            res = tool_result(tool, second, self.pools, rng, {})
            conv.result(cid2, tool, res)
            why = {"alt_order": f"I couldn't find {first.get('order_id')}, but the other number worked.",
                   "alt_email": f"There's no account under {first.get('email')}, but I found one under {second.get('email')}.",
                   "alt_code": f"{first.get('code')} has expired, so I used {second.get('code')} instead.",
                   "alt_window": f"The {first.get('time_window')} was full, so I booked the {second.get('time_window')}."}[mode]
            conv.say(why + " " + final_text(tool, second, res, rng))
            return conv
        if mode == "transient":
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
            return conv
        if mode in ("refund_review", "refund_cap"):
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
                (cid2,) = conv.call(("submit_refund", args2))
                res = tool_result("submit_refund", args2, self.pools, rng, {})
                conv.result(cid2, "submit_refund", res)
                conv.say(f"{_money(amount)} is more than the order total, so I refunded the maximum of "
                         f"{_money(cap)}. " + final_text("submit_refund", args2, res, rng))
                return conv
            conv.result(cid, "submit_refund", {"error": "requires_manual_review",
                                               "message": "This refund needs approval from a specialist."})
            e_args = {"summary": f"Refund of {_money(amount)} on {args['order_id']} needs manual review",
                      "priority": "normal", "order_id": args["order_id"]}
            (cid2,) = conv.call(("escalate_to_human", e_args))
            res = tool_result("escalate_to_human", e_args, self.pools, rng, {})
            conv.result(cid2, "escalate_to_human", res)
            conv.say("That refund needs a specialist's approval. " + final_text("escalate_to_human", e_args, res, rng))
            return conv
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
        (cid2,) = conv.call(("escalate_to_human", e_args))
        res = tool_result("escalate_to_human", e_args, self.pools, rng, {})
        conv.result(cid2, "escalate_to_human", res)
        conv.say(f"Order {args['order_id']} has already shipped, so I can't {what} it myself. "
                 + final_text("escalate_to_human", e_args, res, rng))
        return conv

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
    pending: dict[str, str] = {}
    seen_ids: set[str] = set()
    for m in msgs[1 if msgs[0]["role"] == "system" else 0:]:
        if m["role"] == "assistant" and m.get("tool_calls"):
            assert m["content"] is None
            for tc in m["tool_calls"]:
                assert tc["id"] not in seen_ids
                assert tc["function"]["name"] in listed, (conv["id"], tc["function"]["name"])
                seen_ids.add(tc["id"])
                pending[tc["id"]] = tc["function"]["name"]
                validate_call(tc["function"]["name"], tc["function"]["arguments"])
        elif m["role"] == "tool":
            assert pending.pop(m["tool_call_id"]) == m["name"]
            json.loads(m["content"])
        else:
            assert m["role"] in ("user", "assistant") and isinstance(m["content"], str) and m["content"]


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
