"""Style contracts of docs/DESIGN.md that a test can hold."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = ["translate/request.py", "translate/response.py", "translate/stream.py", "translate/signature.py",
        "translate/tools.py", "translate/provider_errors.py", "money/rates.py", "money/charge.py",
        "translate/sse.py", "config/routing.py", "config/table.py", "translate/tokens.py",
        "translate/reasoning_details.py"]


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


# The packages, top to bottom: a module may import the packages below its own, not above.
LAYERS = ["cli", "server", "flow", "state", "upstream", "observe", "translate", "money", "config", "errors"]
# The exceptions, each said in its package's docstring: observe.redact imports nothing of ccproxyd,
# so every package may scrub with it; the routing table resolves its models' prices when it loads
# (the price shapes and the packaged catalog) and holds each provider's retry and breaker policy.
ALSO = {"*": {"observe.redact"}, "config": {"money.rates", "money.catalog", "upstream.resilience"}}


def _imports(path: Path) -> set[str]:
    """The ccproxyd modules a file imports, as dotted names below ccproxyd ("money.rates")."""
    parts = list(path.relative_to(ROOT / "ccproxyd").with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = parts[:-1][: len(parts) - node.level]
            module = base + (node.module.split(".") if node.module else [])
            names = [module + [a.name] for a in node.names] if len(module) < 2 else [module]
            found |= {".".join(n) for n in names}
    return found


def test_each_package_imports_only_the_packages_below_it():
    wrong = []
    for path in (ROOT / "ccproxyd").rglob("*.py"):
        own = path.relative_to(ROOT / "ccproxyd").parts[0].removesuffix(".py")
        if own not in LAYERS:
            continue                                   # __init__, __main__
        below = LAYERS[LAYERS.index(own):]
        for target in _imports(path):
            package = target.split(".")[0]
            if package in below or package not in LAYERS:   # its own, a lower one, or ccproxyd's __version__
                continue
            if any(target == allowed or target.startswith(allowed + ".") for allowed in ALSO["*"] | ALSO.get(own, set())):
                continue
            wrong.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_package_says_what_it_owns_and_may_import():
    for package in LAYERS[:-1]:
        doc = ast.get_docstring(ast.parse((ROOT / "ccproxyd" / package / "__init__.py").read_text())) or ""
        assert "May import" in doc or "may import" in doc, package


def test_no_test_module_imports_another():
    """Shared test helpers live in tests/support.py (or a fake's module), never in a test module."""
    tests = Path(__file__).parent
    found = [f"{path.name}: {line.strip()}" for path in sorted(tests.glob("*.py"))
             for line in path.read_text().splitlines()
             if re.match(r"\s*(from\s+(\.|tests\.)test_\w+\s+import|import\s+tests\.test_)", line)]
    assert found == []
