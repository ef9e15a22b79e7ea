"""Style contracts of docs/DESIGN.md that a test can hold."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = ["translate/request.py", "translate/response.py", "translate/stream.py", "translate/signature.py",
        "sse.py", "routing.py", "config.py", "tokens.py"]


@pytest.mark.parametrize("module", PURE)
def test_protocol_code_does_no_io(module):
    tree = ast.parse((ROOT / "ccproxyd" / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"sanic", "httpx", "httpx2", "asyncio", "socket", "diskcache"}, imported


def test_every_schema_key_is_in_the_readme():
    schema = json.loads((ROOT / "config" / "routes.schema.json").read_text())
    keys: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(schema)
    assert {"base_url", "up_to", "min_input_tokens", "threshold"} <= keys
    readme = (ROOT / "README.md").read_text()
    reference = readme[readme.index("## Configuration"):]
    missing = sorted(k for k in keys if not re.search(rf"`{re.escape(k)}`", reference))
    assert not missing, f"keys missing from the README configuration reference: {missing}"


def test_modules_stay_small():
    for path in (ROOT / "ccproxyd").rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path


ERROR_CONTEXT = {"attempts", "upstream_model", "provider", "held_back", "retryable", "retry_after", "message",
                 "upstream_status", "details"}


def test_errors_carry_their_context_from_construction():
    """No error's context is assigned after it was made (`error.attempts = …`): it is a constructor
    argument, or `within()` makes a new error with it.  And no exception travels as a value to be
    raised by its receiver (`isinstance(verdict, Exception)`): whoever finds the error raises it."""
    found = []
    for path in (ROOT / "ccproxyd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if (isinstance(target, ast.Attribute) and target.attr in ERROR_CONTEXT
                        and not (isinstance(target.value, ast.Name) and target.value.id == "self")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(target)} = …")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance"
                    and len(node.args) == 2 and ast.unparse(node.args[1]) in ("Exception", "BaseException")
                    and "except" not in ast.unparse(node.args[0])):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
