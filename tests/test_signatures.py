import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.lib.signatures import parse_signatures, type_to_schema

PROMPT = """You are a customer service agent with access to these tools:
- check_order_status(order_id: str) -> OrderStatus
- submit_refund(order_id: str, reason: str, amount: float) -> RefundResult
- escalate_to_human(reason: str, priority: str = "normal") -> Ticket
Always help (politely) and call(me) if unsure.
"""


def by_name(tools):
    return {t["function"]["name"]: t["function"] for t in tools}


def test_brief_example():
    tools = by_name(parse_signatures(PROMPT))
    assert list(tools) == ["check_order_status", "submit_refund", "escalate_to_human"]
    refund = tools["submit_refund"]["parameters"]
    assert refund["properties"] == {"order_id": {"type": "string"}, "reason": {"type": "string"}, "amount": {"type": "number"}}
    assert refund["required"] == ["order_id", "reason", "amount"]
    assert refund["additionalProperties"] is False
    esc = tools["escalate_to_human"]["parameters"]
    assert esc["properties"]["priority"] == {"type": "string", "default": "normal"}
    assert esc["required"] == ["reason"]
    for t in parse_signatures(PROMPT):
        assert t["type"] == "function"


def test_types_optional_defaults_containers():
    text = (
        "1. search(query: str, tags: list[str] | None = None, limit: int = 10, exact: bool = False) - Search docs\n"
        "2) stats(counts: Dict[str, int], ids: List[int], meta: dict, x: Optional[float]) # summary\n"
        "* ping() : liveness check\n"
        "  nested(m: Dict[str, List[Tuple[int, int]]], u: Union[int, str], w: Widget)\n"
    )
    tools = by_name(parse_signatures(text))
    s = tools["search"]
    assert s["description"] == "Search docs"
    assert s["parameters"]["properties"]["tags"]["type"] == "array"
    assert s["parameters"]["properties"]["tags"]["items"] == {"type": "string"}
    assert s["parameters"]["properties"]["limit"] == {"type": "integer", "default": 10}
    assert s["parameters"]["properties"]["exact"] == {"type": "boolean", "default": False}
    assert s["parameters"]["required"] == ["query"]
    st_ = tools["stats"]
    assert st_["description"] == "summary"
    props = st_["parameters"]["properties"]
    assert props["counts"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert props["ids"] == {"type": "array", "items": {"type": "integer"}}
    assert props["meta"] == {"type": "object"}
    assert props["x"] == {"type": "number"}
    assert st_["parameters"]["required"] == ["counts", "ids", "meta"]
    ping = tools["ping"]
    assert ping["parameters"]["properties"] == {} and "required" not in ping["parameters"]
    assert ping["description"] == "liveness check"
    n = tools["nested"]["parameters"]["properties"]
    assert n["m"]["additionalProperties"]["items"]["type"] == "array"
    assert n["u"] == {"type": ["integer", "string"]}
    assert n["w"] == {}  # unknown type: no constraint


def test_prose_is_not_a_tool():
    text = "Please help (politely).\nYou can call(me) later.\nNote: use search(query) carefully.\nif(x: int)\n"
    assert parse_signatures(text) == []
    assert parse_signatures("") == []
    assert parse_signatures("no parens at all") == []


def test_backticks_def_multiline_and_string_defaults():
    text = (
        "- `lookup(key: str, sep: str = \", )\")` - find a key\n"
        "def fetch(url: str,\n          timeout: float = 2.5) -> bytes:\n"
        "    pass\n"
    )
    tools = by_name(parse_signatures(text))
    assert tools["lookup"]["parameters"]["properties"]["sep"]["default"] == ", )"
    assert tools["lookup"]["description"] == "find a key"
    assert tools["fetch"]["parameters"]["properties"]["timeout"] == {"type": "number", "default": 2.5}
    assert tools["fetch"]["parameters"]["required"] == ["url"]


def test_type_to_schema():
    assert type_to_schema("Optional[List[int]]") == ({"type": "array", "items": {"type": "integer"}}, True)
    assert type_to_schema("int | None") == ({"type": "integer"}, True)
    assert type_to_schema('Literal["a", "b"]') == ({"type": "string", "enum": ["a", "b"]}, False)
    assert type_to_schema("Foo[") == ({}, False)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_random_text(text):
    out = parse_signatures(text)
    assert isinstance(out, list)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["- ", "f(", "g(a: ", "int", "]", "[", ")", "=", '"', "'", ",", " ", "\n", "->", "#", ":", "List[", "x"]), max_size=40))
def test_never_raises_on_signature_like_text(parts):
    assert isinstance(parse_signatures("".join(parts)), list)
