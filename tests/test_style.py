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
