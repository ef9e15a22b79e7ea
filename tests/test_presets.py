"""`make run ROUTES=config/<preset>.yaml` serves the preset; CCPROXYD_ROUTES still works, and
routes.yaml stays the default.  Read from `make -n`: the commands make would run, not run.
Every preset and the bundled table pass `ccproxyd check` and name no retired model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from .conftest import ROOT


def planned(*args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("ROUTES", "CCPROXYD_ROUTES")}
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return next(line for line in out.stdout.splitlines() if "ccproxyd " in line)


def test_make_run_serves_a_preset_given_as_routes():
    assert planned("run", "ROUTES=config/ollama.yaml").endswith("ccproxyd serve --routes config/ollama.yaml")
    assert planned("run", ROUTES="config/openrouter.yaml").endswith("serve --routes config/openrouter.yaml")
    assert planned("check", "ROUTES=config/openrouter.yaml").endswith("ccproxyd check config/openrouter.yaml")


def test_make_run_without_routes_keeps_ccproxyd_routes_and_the_default():
    command = planned("run")
    assert command.endswith("serve --routes ${CCPROXYD_ROUTES:-routes.yaml}")      # the shell picks at run time
    shell = subprocess.run(["sh", "-c", "echo " + command.split("--routes ", 1)[1]], capture_output=True, text=True,
                           env={"CCPROXYD_ROUTES": "config/xai.yaml"})
    assert shell.stdout.strip() == "config/xai.yaml"


# ---------------------------------------------------------------- every preset, current models

PRESETS = sorted((ROOT / "config").glob("*.yaml"))
TABLES = [*PRESETS, ROOT / "routes.yaml"]

# Model ids their providers have retired, each with where that is said.  A table that names one
# (as a model name or an `upstream`) would send Claude Code to an error.
RETIRED = {
    # https://github.com/arikusi/deepseek-mcp-server/releases/tag/v2.0.0 ("The DeepSeek API retires
    # those two names on 2026-07-24"); https://docs.sim.ai/models/deepseek.md ("Retired by the provider")
    "deepseek-chat": "DeepSeek, 2026-07-24", "deepseek-reasoner": "DeepSeek, 2026-07-24",
    "deepseek/deepseek-chat": "DeepSeek, 2026-07-24", "deepseek/deepseek-reasoner": "DeepSeek, 2026-07-24",
    # https://docs.sim.ai/models/xai ("Superseded and retired models ... Retired by the provider")
    "grok-code-fast-1": "xAI", "grok-4-fast-reasoning": "xAI", "grok-4-fast-non-reasoning": "xAI",
    "grok-4-0709": "xAI", "grok-4-1-fast-reasoning": "xAI", "grok-4-1-fast-non-reasoning": "xAI",
    "grok-3": "xAI", "grok-3-mini": "xAI",
    # https://openrouter.ai/x-ai/grok-4-fast:nitro/api ("Going away May 15, 2026")
    "x-ai/grok-4-fast": "OpenRouter, 2026-05-15", "x-ai/grok-code-fast-1": "OpenRouter (xAI retired it)",
    # https://www.promptfoo.dev/docs/providers/moonshot/ ("discontinued in 2026")
    "kimi-k2-0711-preview": "Moonshot", "kimi-k2-0905-preview": "Moonshot", "kimi-k2-turbo-preview": "Moonshot",
    "kimi-k2-thinking": "Moonshot", "kimi-k2-thinking-turbo": "Moonshot", "kimi-latest": "Moonshot",
    # https://docs.sim.ai/models/groq.md ("Retired by the provider")
    "qwen/qwen3-32b": "Groq", "llama-3.3-70b-versatile": "Groq", "llama-3.1-8b-instant": "Groq",
    "moonshotai/kimi-k2-instruct-0905": "Groq", "meta-llama/llama-4-scout-17b-16e-instruct": "Groq",
    # https://www.skills.sh/terminalskills/skills/cerebras (Cerebras' deprecations page, October 2026)
    "llama3.1-8b": "Cerebras", "llama-3.3-70b": "Cerebras", "qwen-3-32b": "Cerebras",
    "qwen-3-235b-a22b-instruct-2507": "Cerebras", "zai-glm-4.7": "Cerebras",
    # https://ai.google.dev/gemini-api/docs/models/gemini-2.0-flash (deprecated: "Uso suspenso")
    "gemini-2.0-flash": "Google", "gemini-2.0-flash-001": "Google",
}


def model_ids(path) -> set[str]:
    """Every model id a table could send upstream: model names and their `upstream` values
    (a `${VAR:-default}` counts by its default)."""
    data = yaml.safe_load(path.read_text())
    ids = set()
    for name, model in data["models"].items():
        ids.add(name)
        upstream = str(model.get("upstream", name))
        ids.add(upstream.split(":-", 1)[1].rstrip("}") if upstream.startswith("${") else upstream)
    return ids


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_every_preset_passes_ccproxyd_check(table):
    out = subprocess.run([sys.executable, "-m", "ccproxyd", "check", str(table)], cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{table}: ok (" in out.stdout


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_no_preset_names_a_retired_model(table):
    assert {i: RETIRED[i] for i in model_ids(table) if i.lower() in RETIRED} == {}


def test_the_retired_check_sees_an_upstream_and_a_default():
    """The check reads `upstream` and `${VAR:-default}`, so a retired id cannot hide there."""
    ids = model_ids(ROOT / "config" / "ollama.yaml")
    assert "qwen3-coder:30b" in ids and "gpt-oss:20b" in ids and "qwen3-coder" in ids


def test_a_preset_for_each_provider_of_the_issue():
    names = {p.stem for p in PRESETS}
    assert {"moonshot", "zai", "qwen", "minimax", "gemini", "groq", "cerebras", "openai", "deepseek", "xai",
            "openrouter"} <= names


# Presets for servers on the user's own machine: their models have no list price by nature.
LOCAL = {"llama-cpp.yaml", "ollama.yaml", "vllm.yaml"}


@pytest.mark.parametrize("table", [p for p in PRESETS if p.name not in LOCAL], ids=lambda p: p.name)
def test_every_hosted_preset_model_has_a_price(table):
    """A hosted preset names only models the catalog (or the table) prices, so cost and savings
    are never unknown; `ccproxyd check` warns "has no price" for any other."""
    out = subprocess.run([sys.executable, "-m", "ccproxyd", "check", str(table)], cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
                         capture_output=True, text=True, timeout=60)
    assert [line for line in (out.stdout + out.stderr).splitlines() if "has no price" in line] == []
