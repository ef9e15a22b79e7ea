"""A minimal stdio MCP server for the Claude Code tests: one tool, `lookup`, which answers with a
fixed sentence naming its argument.  JSON-RPC 2.0, one message per line (MCP's stdio transport)."""

from __future__ import annotations

import json
import sys

ANSWER = "The secret word for {key} is PERIWINKLE-42."
TOOL = {"name": "lookup", "description": "Look up the secret word for a key.",
        "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}}


def answer(request: dict) -> dict | None:
    method, params = request.get("method"), request.get("params") or {}
    if "id" not in request:
        return None                                  # a notification
    if method == "initialize":
        result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "demo", "version": "1.0"}}
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call":
        key = (params.get("arguments") or {}).get("key", "?")
        result = {"content": [{"type": "text", "text": ANSWER.format(key=key)}]}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": f"no method {method}"}}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
