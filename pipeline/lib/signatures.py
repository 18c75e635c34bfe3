"""Extract Python-like tool signatures from free text (usually a system prompt).

Example input::

    You are a customer service agent with access to these tools:
    - check_order_status(order_id: str) -> OrderStatus
    - submit_refund(order_id: str, reason: str, amount: float) -> RefundResult
    - escalate_to_human(reason: str, priority: str = "normal") -> Ticket  # hand off

``parse_signatures(text)`` returns OpenAI tool schemas
(``[{"type": "function", "function": {"name", "description", "parameters"}}]``).

Rules:
- A signature must start a line, after optional indentation, an optional bullet
  (``-``, ``*``, ``+``, ``•``) or number (``1.``, ``1)``, ``(1)``), an optional backtick
  and an optional ``def``/``async def``. The name is an identifier (dots allowed)
  followed *directly* by ``(``.
- Every parameter must look like ``name: type``, ``name: type = default`` or
  ``name=default``; otherwise the line is not a signature (so prose such as
  ``help (politely)`` or ``call(me)`` is ignored). ``self``/``cls``, ``*``, ``/``,
  ``*args`` and ``**kwargs`` are skipped.
- Types map to JSON Schema: str->string, int->integer, float->number,
  bool->boolean, list/List[X]/tuple/set->array (``items`` when X is known),
  dict/Dict[K, V]->object (``additionalProperties`` from V when known),
  Literal[...]->enum, Optional[X] / X | None / Union[X, None] -> X and not required,
  Union[A, B] -> anyOf. Unknown types get no ``type`` constraint.
- A parameter with a default is not required and the default (when it is a Python
  literal) is recorded as ``default``.
- Text after the signature (and after an optional ``-> ReturnType``) separated by
  `` - ``, ``—``, ``:``, ``#`` or ``//`` becomes the description.
- It never raises: anything that fails to parse is skipped; ``[]`` if nothing is found.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
from typing import Any

__all__ = ["parse_signatures", "type_to_schema"]

_PREFIX_RE = re.compile(
    r"""^[ \t]*
        (?:(?:[-*+•·▪‣]|\d{1,3}[.)]|\(\d{1,3}\)|[A-Za-z][.)])[ \t]+)?   # bullet / number
        (?:\*\*|__)?                                                  # markdown bold
        `?                                                            # inline code
        (?:(?:async[ \t]+)?def[ \t]+)?                                # def
        (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
        \(""",
    re.VERBOSE,
)
_PARAM_NAME_RE = re.compile(r"^(?P<star>\*{0,2})(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_MAX_CONTINUATION_LINES = 20
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}
# Names that look like calls in code but are not tools.
_NOT_TOOLS = set(keyword.kwlist) | {"print", "len", "range", "isinstance", "super", "type"}

_SIMPLE = {
    "str": {"type": "string"},
    "string": {"type": "string"},
    "text": {"type": "string"},
    "bytes": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
    "int": {"type": "integer"},
    "integer": {"type": "integer"},
    "long": {"type": "integer"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "number": {"type": "number"},
    "decimal": {"type": "number"},
    "bool": {"type": "boolean"},
    "boolean": {"type": "boolean"},
    "none": {"type": "null"},
    "nonetype": {"type": "null"},
    "null": {"type": "null"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "time": {"type": "string", "format": "time"},
    "any": {},
    "object": {},
}
_ARRAYS = {"list", "tuple", "set", "frozenset", "sequence", "iterable", "array", "collection"}
_OBJECTS = {"dict", "mapping", "mutablemapping", "map", "typeddict", "json", "ordereddict"}


# --------------------------------------------------------------------------- scanning


def _find_close(text: str, start: int) -> int:
    """Index of the bracket closing ``text[start]`` (an opener), or -1.

    Understands nested brackets and quoted strings (defaults may hold ``)`` or ``,``).
    """
    stack: list[str] = []
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return -1
            i = j + 1
            continue
        if c in _OPEN:
            stack.append(_OPEN[c])
        elif c in _CLOSE:
            if not stack or stack[-1] != c:
                return -1
            stack.pop()
            if not stack:
                return i
        i += 1
    return -1


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` (one character) outside brackets and quotes."""
    parts: list[str] = []
    depth = 0
    buf: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            buf.append(c)
            if c == "\\" and i + 1 < len(text):
                buf.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
            buf.append(c)
        elif c in _OPEN:
            depth += 1
            buf.append(c)
        elif c in _CLOSE:
            depth -= 1
            buf.append(c)
        elif c == sep and depth == 0:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(c)
        i += 1
    parts.append("".join(buf))
    return parts


def _partition_top(text: str, sep: str) -> tuple[str, str | None]:
    parts = _split_top(text, sep)
    if len(parts) == 1:
        return text, None
    return parts[0], sep.join(parts[1:])


# --------------------------------------------------------------------------- types


def _literal(text: str) -> tuple[bool, Any]:
    try:
        value = ast.literal_eval(text.strip())
    except Exception:
        return False, None
    value = _jsonable(value)
    try:
        json.dumps(value)
    except Exception:
        return False, None
    return True, value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, complex):
        raise TypeError("complex")
    return value


def _schema_of_value(value: Any) -> dict:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object"}
    return {}


def type_to_schema(annotation: str) -> tuple[dict, bool]:
    """JSON Schema for a Python-ish type annotation, plus whether it admits None.

    ``type_to_schema("Optional[List[int]]") == ({"type": "array", "items": {"type": "integer"}}, True)``
    Unknown types give ``{}`` (no constraint).
    """
    try:
        return _type_to_schema(annotation, 0)
    except Exception:
        return {}, False


def _type_to_schema(annotation: str, depth: int) -> tuple[dict, bool]:
    t = annotation.strip()
    if depth > 20 or not t:
        return {}, False
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":  # forward reference
        t = t[1:-1].strip()
    # X | Y
    alternatives = [a for a in _split_top(t, "|")]
    if len(alternatives) > 1:
        return _union(alternatives, depth)
    head, _, rest = t.partition("[")
    head = head.strip()
    args: list[str] = []
    if rest:
        if not t.endswith("]"):
            return {}, False
        args = [a.strip() for a in _split_top(t[t.index("[") + 1 : -1], ",")]
        args = [a for a in args if a]
    base = head.rsplit(".", 1)[-1].lower()  # typing.List -> list
    if base == "optional":
        schema, _ = _type_to_schema(args[0], depth + 1) if args else ({}, False)
        return schema, True
    if base == "union":
        return _union(args, depth)
    if base == "literal":
        values = []
        for a in args:
            ok, v = _literal(a)
            if not ok:
                return {}, False
            values.append(v)
        nullable = any(v is None for v in values)
        values = [v for v in values if v is not None]
        schema: dict = {"enum": values}
        kinds = {_schema_of_value(v).get("type") for v in values}
        if len(kinds) == 1 and None not in kinds:
            schema = {"type": kinds.pop(), "enum": values}
        return schema, nullable
    if base == "annotated" and args:
        return _type_to_schema(args[0], depth + 1)
    if base in _ARRAYS:
        schema = {"type": "array"}
        items = [a for a in args if a != "..."]
        if items:
            sub = [_type_to_schema(a, depth + 1)[0] for a in items]
            if all(s == sub[0] for s in sub) and sub[0]:
                schema["items"] = sub[0]
            elif base == "tuple" and all(sub):
                schema["prefixItems"] = sub
                schema["minItems"] = schema["maxItems"] = len(sub)
        return schema, False
    if base in _OBJECTS:
        schema = {"type": "object"}
        if len(args) == 2:
            value_schema, _ = _type_to_schema(args[1], depth + 1)
            if value_schema:
                schema["additionalProperties"] = value_schema
        return schema, False
    if args:  # unknown generic
        return {}, False
    simple = _SIMPLE.get(base)
    if simple is not None and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", head):
        if simple.get("type") == "null":
            return {}, True
        return dict(simple), False
    return {}, False


def _union(alternatives: list[str], depth: int) -> tuple[dict, bool]:
    schemas: list[dict] = []
    nullable = False
    for alt in alternatives:
        s, n = _type_to_schema(alt, depth + 1)
        nullable = nullable or n
        if s.get("type") == "null":
            nullable = True
            continue
        if not s:
            if alt.strip().lower() in ("none", "nonetype", "null"):
                nullable = True
                continue
            return {}, nullable  # unknown member -> unconstrained
        if s not in schemas:
            schemas.append(s)
    if not schemas:
        return {}, nullable
    if len(schemas) == 1:
        return schemas[0], nullable
    if all(set(s) == {"type"} for s in schemas):
        return {"type": [s["type"] for s in schemas]}, nullable
    return {"anyOf": schemas}, nullable


# --------------------------------------------------------------------------- signatures


def _parse_params(text: str) -> tuple[dict, list[str]] | None:
    properties: dict[str, dict] = {}
    required: list[str] = []
    if not text.strip():
        return properties, required
    for raw in _split_top(text, ","):
        p = raw.strip()
        if not p:
            continue  # trailing comma
        if p in ("*", "/"):
            continue
        left, default_text = _partition_top(p, "=")
        name_part, type_text = _partition_top(left, ":")
        m = _PARAM_NAME_RE.match(name_part.strip())
        if not m:
            return None
        name = m.group("name")
        if type_text is not None and not type_text.strip():
            return None
        if type_text is None and default_text is None:
            if name in ("self", "cls") or m.group("star"):
                continue
            return None  # untyped, undefaulted: does not look like a signature
        if m.group("star") or name in ("self", "cls"):
            continue  # *args / **kwargs cannot be expressed as named properties
        if name in properties:
            return None
        schema: dict = {}
        nullable = False
        if type_text is not None:
            schema, nullable = type_to_schema(type_text)
        has_default = default_text is not None
        if has_default:
            ok, value = _literal(default_text)
            if ok:
                if not schema and value is not None:
                    schema = _schema_of_value(value)
                schema = dict(schema)
                schema["default"] = value
        properties[name] = schema
        if not has_default and not nullable:
            required.append(name)
    return properties, required


def _skip_return_annotation(rest: str) -> str:
    """Drop a leading ``-> Type`` from ``rest`` and return what follows."""
    s = rest.lstrip()
    if not s.startswith("->"):
        return rest
    i = 2
    n = len(s)
    while i < n and s[i] in " \t":
        i += 1
    while i < n:
        c = s[i]
        if c.isalnum() or c in "_.'\"":
            i += 1
        elif c in _OPEN:
            j = _find_close(s, i)
            if j < 0:
                return ""
            i = j + 1
        else:
            # allow "A | B" unions
            k = i
            while k < n and s[k] in " \t":
                k += 1
            if k < n and s[k] == "|":
                k += 1
                while k < n and s[k] in " \t":
                    k += 1
                i = k
                continue
            break
    return s[i:]


_DESC_SEPARATORS = ("--", "-", "—", "–", "//", "#", ":", "=>", "|")


def _description(rest: str) -> str:
    s = _skip_return_annotation(rest).strip()
    s = s.lstrip("`*_").strip()  # closing inline code / bold
    for sep in _DESC_SEPARATORS:
        if s.startswith(sep):
            s = s[len(sep):].strip()
            break
    return s.strip().strip("`").strip()


def parse_signatures(text: str) -> list[dict]:
    """Find tool signatures in ``text`` and return them as OpenAI tool schemas."""
    try:
        return _parse_signatures(text)
    except Exception:  # pragma: no cover - belt and braces: never raise
        return []


def _parse_signatures(text: str) -> list[dict]:
    if not isinstance(text, str) or "(" not in text:
        return []
    lines = text.splitlines()
    tools: list[dict] = []
    seen: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        try:
            m = _PREFIX_RE.match(line)
            if not m:
                continue
            name = m.group("name")
            if name in _NOT_TOOLS or name in seen:
                continue
            # Join continuation lines for signatures spread over several lines.
            joined = line
            open_at = m.end() - 1
            close = _find_close(joined, open_at)
            extra = 0
            while close < 0 and extra < _MAX_CONTINUATION_LINES and i + extra < len(lines):
                joined = joined + "\n" + lines[i + extra]
                extra += 1
                close = _find_close(joined, open_at)
            if close < 0:
                continue
            parsed = _parse_params(joined[open_at + 1 : close].replace("\n", " "))
            if parsed is None:
                continue
            properties, required = parsed
            rest = joined[close + 1 :]
            if "\n" in rest:
                rest = rest.split("\n", 1)[0]
            parameters: dict = {"type": "object", "properties": properties}
            if required:
                parameters["required"] = required
            parameters["additionalProperties"] = False
            tools.append(
                {
                    "type": "function",
                    "function": {
                        "name": name,
                        "description": _description(rest),
                        "parameters": parameters,
                    },
                }
            )
            seen.add(name)
            i += extra
        except Exception:
            continue
    return tools


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(json.dumps(parse_signatures(sys.stdin.read()), indent=2, ensure_ascii=False))
