"""A small MCP server for the tests (the MCP SDK's MCPServer, formerly FastMCP): tools with a nested object
(a `$ref` to `$defs`), enums, lists of objects and a recursive type. Runs over stdio, or streamable HTTP
with `--http PORT`."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Literal

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

server = MCPServer("acme-test")


class Address(BaseModel):
    street: str
    city: str
    postal_code: str = Field(description="ZIP or postal code")
    country: Literal["US", "CA", "MX"] = "US"


class Priority(str, Enum):
    low = "low"
    normal = "normal"
    urgent = "urgent"


class Line(BaseModel):
    sku: str = Field(description="Stock keeping unit, e.g. SKU-1234")
    quantity: int = Field(ge=1)


class Category(BaseModel):
    name: str
    children: list[Category] = []


@server.tool()
def update_shipping_address(order_id: str, address: Address) -> str:
    """Change where an order ships."""
    return "ok"


@server.tool()
def escalate_to_human(reason: str, priority: Priority = Priority.normal) -> str:
    """Hand the conversation to a person."""
    return "ok"


@server.tool()
def create_order(customer_email: str, lines: list[Line], gift_note: str | None = None) -> str:
    """Place an order for a customer."""
    return "ok"


@server.tool()
def add_category(category: Category) -> str:
    """Add a category tree to the catalogue."""
    return "ok"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run()
