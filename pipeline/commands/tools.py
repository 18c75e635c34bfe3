"""Tool schemas from an MCP server: `tools/list`, converted to the OpenAI `tools` form that data.tools reads.

    make tools MCP="python my_server.py --flag" OUT=tools.json        # a server started over stdio
    make tools MCP=http://localhost:8000/mcp OUT=tools.json           # a running server (streamable HTTP)

Connects with the official MCP Python SDK, lists every tool (all pages), and converts each: `inputSchema`
becomes `parameters`; local `$ref`s are written out in place (a recursive one is kept, with its `$defs`), and
the `title`s that schema generators add to every field are dropped (they only cost prompt tokens). Each
converted tool then passes the validator's own checks for a tools file. Writes OUT, and OUT's `.report.json`
beside it: what was converted, what changed, and what was not converted and why.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import sys
from pathlib import Path

from rich.table import Table

from pipeline.lib.common import StageError, console, rel, run_or_fail, write_text_atomic
from pipeline.lib.recipe import fail

MAX_PAGES = 100  # a server whose listing never ends cannot hang the import
# Keywords whose value is one schema, a list of schemas, or a name -> schema map (what the walk descends into).
ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
       "unevaluatedItems", "unevaluatedProperties")
MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


# --- conversion -------------------------------------------------------------------------------------------

class Unconvertible(ValueError):
    """A tool that cannot become an OpenAI tool: the message says why."""


def _local_target(ref: str, root: dict):
    if not ref.startswith("#/"):
        raise Unconvertible(f"its schema refers to {ref!r}, outside the tool's own schema")
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise Unconvertible(f"its schema refers to {ref!r}, which it does not define")
        node = node[part]
    return node


def convert_schema(schema: dict) -> tuple[dict, dict]:
    """(parameters, what changed): local $refs written out in place unless recursive, generated titles dropped."""
    changes = {"refs_inlined": 0, "refs_kept": 0, "titles_dropped": 0}

    def walk(node, stack: tuple[str, ...]):
        if isinstance(node, list):
            return [walk(x, stack) for x in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str):
            if ref in stack:  # recursive: keep the reference (its $defs stay)
                changes["refs_kept"] += 1
                return {k: v for k, v in node.items() if k != "title"}
            target = walk(_local_target(ref, root), (*stack, ref))
            siblings = {k: walk(v, stack) if k in ONE + MANY + NAMED else v for k, v in node.items()
                        if k not in ("$ref", "title")}
            changes["refs_inlined"] += 1
            return {**target, **siblings} if isinstance(target, dict) else target
        out = {}
        for k, v in node.items():
            if k == "title" and isinstance(v, str):
                changes["titles_dropped"] += 1
                continue
            if k in ("$defs", "definitions") and node is root and isinstance(v, dict):
                # a definition kept for a recursive $ref refers to itself by reference, not by a copy of itself
                out[k] = {name: walk(s, (*stack, f"#/{k}/{name}")) for name, s in v.items()}
            elif k in NAMED and isinstance(v, dict):
                out[k] = {name: walk(s, stack) for name, s in v.items()}
            elif k in ONE:
                out[k] = walk(v, stack)
            elif k in MANY and isinstance(v, list):
                out[k] = [walk(s, stack) for s in v]
            else:
                out[k] = v
        return out

    root = copy.deepcopy(schema)
    params = walk(root, ())
    if not changes["refs_kept"]:
        for key in ("$defs", "definitions"):
            params.pop(key, None)  # everything they held is written out where it was used
    return params, changes


def convert_tool(tool: dict) -> tuple[dict, dict]:
    """One MCP tool (as `tools/list` returns it) -> (OpenAI tool, what changed); Unconvertible says why not."""
    from pipeline.lib.conversations import normalize_tools

    name = tool.get("name")
    schema = tool.get("inputSchema")
    if schema is None:
        schema = {"type": "object", "properties": {}}
    if not isinstance(schema, dict):
        raise Unconvertible("its inputSchema is not a JSON object")
    if schema.get("type") != "object":
        raise Unconvertible(f"its inputSchema is of type {schema.get('type')!r}: an OpenAI tool takes an object of "
                            "named parameters")
    params, changes = convert_schema(schema)
    description = tool.get("description") or tool.get("title") or (tool.get("annotations") or {}).get("title") or ""
    out, errors = normalize_tools([{"type": "function", "function": {"name": name, "description": description,
                                                                      "parameters": params}}])
    if errors:
        raise Unconvertible("; ".join(e["message"].removeprefix("tools[0] ") for e in errors))
    if not description:
        changes["no_description"] = True
    return out[0], changes


def convert(tools: list[dict]) -> tuple[list[dict], dict]:
    """Every MCP tool converted, in the server's order, and the report of what was and was not."""
    converted, report = [], {"converted": [], "not_converted": []}
    seen: set[str] = set()
    for t in tools:
        name = t.get("name") if isinstance(t.get("name"), str) else repr(t.get("name"))
        try:
            if name in seen:
                raise Unconvertible("the server lists a second tool of this name")
            openai_tool, changes = convert_tool(t)
        except Unconvertible as e:
            report["not_converted"].append({"name": name, "why": str(e)})
            continue
        seen.add(name)
        converted.append(openai_tool)
        props = openai_tool["function"]["parameters"].get("properties") or {}
        report["converted"].append({"name": name, "parameters": len(props),
                                    "required": len(openai_tool["function"]["parameters"].get("required") or []),
                                    **changes})
    return converted, report


# --- the MCP client ---------------------------------------------------------------------------------------

def server_of(spec: str):
    """What the SDK's Client connects to: a URL (streamable HTTP) or a command started over stdio."""
    spec = spec.strip()
    if spec.startswith(("http://", "https://")):
        return spec
    from mcp.client.stdio import StdioServerParameters

    try:
        words = shlex.split(spec)
    except ValueError as e:
        raise StageError(f"MCP={spec!r} is not a command line: {e}") from None
    if not words:
        raise StageError('MCP is empty: give the server\'s command (MCP="python server.py") or its URL (MCP=http://host:port/mcp).')
    return StdioServerParameters(command=words[0], args=words[1:], env=dict(os.environ), cwd=os.getcwd())


async def list_tools(spec: str, timeout: float) -> tuple[list[dict], dict]:
    import anyio
    from mcp import Client

    tools, cursor = [], None
    with anyio.fail_after(timeout):
        async with Client(server_of(spec), read_timeout_seconds=timeout) as client:
            info = getattr(client, "server_info", None) or getattr(getattr(client, "session", None), "server_info", None)
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools += [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            else:
                raise StageError(f"the server's tool listing did not end after {MAX_PAGES} pages")
    server = {"name": getattr(info, "name", None), "version": getattr(info, "version", None)} if info else {}
    return tools, server


def fetch(spec: str, timeout: float = 60.0) -> tuple[list[dict], dict]:
    import anyio

    try:
        return anyio.run(list_tools, spec, timeout)
    except StageError:
        raise
    except TimeoutError:
        raise StageError(f"the MCP server {spec!r} did not answer tools/list within {timeout:.0f} s.") from None
    except BaseException as e:  # noqa: BLE001 - the SDK raises groups of connection errors: name the first
        if isinstance(e, KeyboardInterrupt):
            raise
        inner = e
        while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
            inner = inner.exceptions[0]
        raise StageError(f"could not list the tools of the MCP server {spec!r}: {type(inner).__name__}: {inner}. "
                         "Check that the command starts the server on stdio (or that the URL is its MCP endpoint).") from None


def run(spec: str, out: Path, timeout: float) -> dict:
    console.print(f"tools: asking the MCP server {spec!r} for its tools")
    tools, server = fetch(spec, timeout)
    converted, report = convert(tools)
    report = {"server": spec, "server_info": server, "listed": len(tools), **report}
    if not converted:
        raise StageError(f"the MCP server listed {len(tools)} tool(s) and none could be converted: "
                         + "; ".join(f"{x['name']}: {x['why']}" for x in report["not_converted"]) + f". {rel(out)} was not written.")
    write_text_atomic(out, json.dumps(converted, indent=2, ensure_ascii=False) + "\n")
    report_path = out.with_suffix(".report.json")
    write_text_atomic(report_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    t = Table(title=f"{len(converted)} of {len(tools)} tools converted -> {rel(out)}")
    for c in ("tool", "parameters", "required", "$refs written out", "titles dropped", "note"):
        t.add_column(c)
    for x in report["converted"]:
        note = ("recursive $ref kept " if x["refs_kept"] else "") + ("no description" if x.get("no_description") else "")
        t.add_row(x["name"], str(x["parameters"]), str(x["required"]), str(x["refs_inlined"]), str(x["titles_dropped"]), note)
    for x in report["not_converted"]:
        t.add_row(f"[red]{x['name']}[/]", "", "", "", "", f"[red]not converted: {x['why']}[/]")
    console.print(t)
    console.print(f"tools: report in {rel(report_path)}; train with ARGS=\"data.tools={rel(out)}\"")
    return report


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pipeline.commands.tools", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mcp", default=os.environ.get("TOOLTUNE_MCP"),
                    help="the server: a command line (started over stdio) or an http(s) URL (streamable HTTP)")
    ap.add_argument("--out", default="tools.json", help="where to write the OpenAI tools list")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    a = ap.parse_args(argv)
    if not a.mcp:
        fail('name the MCP server: make tools MCP="python server.py" (stdio) or MCP=http://host:port/mcp')
    run_or_fail("tools", lambda: run(a.mcp, Path(a.out), a.timeout), "nothing was written.")


if __name__ == "__main__":
    main(sys.argv[1:])
