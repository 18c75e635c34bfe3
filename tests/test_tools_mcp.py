"""`make tools`: a real MCP server (tests/data/mcp_server.py, the MCP SDK's MCPServer) started over stdio, and
over streamable HTTP, listed by the SDK's client, converted to the OpenAI tools that data.tools reads."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from pipeline.commands import tools as mcp_tools
from pipeline.lib.conversations import load_tools_file
from pipeline.lib.recipe import ROOT

SERVER = ROOT / "tests" / "data" / "mcp_server.py"
PY = sys.executable

ADDRESS = {"type": "object", "properties": {
    "street": {"type": "string"}, "city": {"type": "string"},
    "postal_code": {"description": "ZIP or postal code", "type": "string"},
    "country": {"default": "US", "enum": ["US", "CA", "MX"], "type": "string"}},
    "required": ["street", "city", "postal_code"]}
CATEGORY = {"properties": {"name": {"type": "string"},
                           "children": {"default": [], "items": {"$ref": "#/$defs/Category"}, "type": "array"}},
            "required": ["name"], "type": "object"}
EXPECTED = [
    {"name": "update_shipping_address", "description": "Change where an order ships.",
     "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}, "address": ADDRESS},
                    "required": ["order_id", "address"]}},
    {"name": "escalate_to_human", "description": "Hand the conversation to a person.",
     "parameters": {"type": "object", "properties": {
         "reason": {"type": "string"},
         "priority": {"enum": ["low", "normal", "urgent"], "type": "string", "default": "normal"}},
         "required": ["reason"]}},
    {"name": "create_order", "description": "Place an order for a customer.",
     "parameters": {"type": "object", "properties": {
         "customer_email": {"type": "string"},
         "lines": {"items": {"properties": {"sku": {"description": "Stock keeping unit, e.g. SKU-1234", "type": "string"},
                                            "quantity": {"minimum": 1, "type": "integer"}},
                             "required": ["sku", "quantity"], "type": "object"}, "type": "array"},
         "gift_note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}},
         "required": ["customer_email", "lines"]}},
    {"name": "add_category", "description": "Add a category tree to the catalogue.",
     "parameters": {"type": "object", "$defs": {"Category": CATEGORY}, "properties": {"category": CATEGORY},
                    "required": ["category"]}},
]


def check_written(out) -> None:
    written = json.loads(out.read_text())
    assert [t["function"] for t in written] == EXPECTED
    assert all(t["type"] == "function" for t in written)
    assert load_tools_file(out) == written  # the validator reads it as data.tools
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["listed"] == 4 and not report["not_converted"]
    by_name = {x["name"]: x for x in report["converted"]}
    assert by_name["update_shipping_address"]["refs_inlined"] == 1 and by_name["add_category"]["refs_kept"] == 2
    assert report["server_info"]["name"] == "acme-test"


def test_make_tools_from_an_mcp_server_over_stdio(tmp_path):
    out = tmp_path / "tools.json"
    r = subprocess.run(["make", "--no-print-directory", "tools", f"MCP={PY} {SERVER}", f"OUT={out}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 of 4 tools converted" in r.stdout
    check_written(out)
    # the converted schemas check real arguments: a call with the nested address passes, one without fails
    from jsonschema import Draft202012Validator

    params = EXPECTED[0]["parameters"]
    assert Draft202012Validator(params).is_valid({"order_id": "A1", "address": {"street": "1 Main", "city": "X",
                                                                                "postal_code": "10001"}})
    assert not Draft202012Validator(params).is_valid({"order_id": "A1", "address": {"street": "1 Main"}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tools_from_an_mcp_server_over_streamable_http(tmp_path):
    port = free_port()
    proc = subprocess.Popen([PY, str(SERVER), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.3)
        out = tmp_path / "http.json"
        mcp_tools.main(["--mcp", f"http://127.0.0.1:{port}/mcp", "--out", str(out)])
        check_written(out)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_what_cannot_be_converted_is_reported_with_why():
    listed = [
        {"name": "ok_tool", "description": "Fine.", "inputSchema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        {"name": "bad name!", "inputSchema": {"type": "object"}},
        {"name": "scalar_input", "inputSchema": {"type": "string"}},
        {"name": "external", "inputSchema": {"type": "object", "properties": {"x": {"$ref": "https://example.com/s.json"}}}},
        {"name": "dangling", "inputSchema": {"type": "object", "properties": {"x": {"$ref": "#/$defs/Missing"}}}},
        {"name": "ok_tool", "inputSchema": {"type": "object"}},
        {"name": "bad_schema", "inputSchema": {"type": "object", "properties": {"x": {"type": "strnig"}}}},
    ]
    converted, report = mcp_tools.convert(listed)
    assert [t["function"]["name"] for t in converted] == ["ok_tool"]
    why = {x["name"]: x["why"] for x in report["not_converted"]}
    assert set(why) == {"bad name!", "scalar_input", "external", "dangling", "ok_tool", "bad_schema"}
    assert "not allowed" in why["bad name!"] and "object of named parameters" in why["scalar_input"]
    assert "outside the tool's own schema" in why["external"] and "does not define" in why["dangling"]
    assert "second tool" in why["ok_tool"] and "invalid JSON Schema" in why["bad_schema"]


def test_an_mcp_server_that_does_not_start_is_a_clear_error(tmp_path, capsys, monkeypatch):
    out = tmp_path / "tools.json"
    with pytest.raises(SystemExit) as exc:
        mcp_tools.main(["--mcp", f"{PY} -c 'import sys; sys.exit(3)'", "--out", str(out), "--timeout", "30"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "could not list the tools" in err and "Traceback" not in err and not out.exists()
    monkeypatch.delenv("TOOLTUNE_MCP", raising=False)
    with pytest.raises(SystemExit):
        mcp_tools.main(["--out", str(out)])
    assert "name the MCP server" in capsys.readouterr().err


def test_mcp_reaches_python_as_text_not_through_a_shell(tmp_path):
    """MCP is the server's command line: split into words by Python and started without a shell, so backticks
    and $(...) in it are never run by make or a shell."""
    marker = tmp_path / "ran"
    out = tmp_path / "tools.json"
    r = subprocess.run(["make", "--no-print-directory", "tools", f"MCP=`touch {marker}` $(shell touch {marker})",
                        f"OUT={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and not marker.exists() and not out.exists()
    assert "could not list the tools" in r.stderr and "Traceback" not in r.stderr
