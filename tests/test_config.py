"""Routing table loading, validation messages with PATH:LINE:COL, routing, and `ccproxyd check`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ccproxyd.config import table as config
from ccproxyd.errors import ConfigError, NotFound
from ccproxyd.config.routing import resolve

ROOT = Path(__file__).resolve().parent.parent
DESIGN_MINIMAL = """\
providers:
  mock:
    base_url: http://127.0.0.1:9999/v1
    api_key_env: MOCK_KEY
models:
  gpt-mock:
    provider: mock
    context_window: 128000
    max_output_tokens: 16384
routes:
  - match: "*"
    model: gpt-mock
"""


def test_design_minimal_table_routes_everything_to_gpt_mock():
    table = config.load(DESIGN_MINIMAL, "min.yaml", env={"MOCK_KEY": "k"})
    for name in ("claude-opus-4-1", "claude-3-5-haiku-20241022", "anything"):
        d = resolve(table, name)
        assert d.primary.model.upstream == "gpt-mock"
        assert d.primary.provider.base_url == "http://127.0.0.1:9999/v1"
    assert table.warnings == ()


def test_bundled_table_catalogue_and_seed_variables():
    table = config.load((ROOT / "routes.yaml").read_text(), "routes.yaml", env={})
    gpt6, deepseek = (1050000, 128000), (1048576, 393216)      # config/openai.yaml, config/deepseek.yaml
    expect = {"gpt-6-astra": gpt6, "gpt-6.1-sol": gpt6, "gpt-6-luna": gpt6, "deepseek-flash": deepseek,
              "deepseek-v4-pro": deepseek, "deepseek/deepseek-v4-pro": deepseek,
              "moonshotai/kimi-k3": (1048576, 1048576)}
    assert {n: (m.context_window, m.max_output_tokens) for n, m in table.models.items()} == expect
    assert {m.prices.origin for m in table.models.values() if m.prices} <= {"openai", "deepseek", "openrouter"}
    assert table.models["gpt-6.1-sol"].prices.origin == "openai" and not table.claude_prices  # the catalog prices them
    assert resolve(table, "claude-opus-4-1").primary.model.name == "gpt-6.1-sol"
    assert resolve(table, "claude-3-5-haiku-20241022").primary.model.name == "gpt-6-luna"
    assert table.providers["openai"].base_url == "https://api.openai.com/v1"
    env = {"BIG_MODEL_NAME": "gpt-6-astra", "SMALL_MODEL_NAME": "deepseek-flash", "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}
    table = config.load((ROOT / "routes.yaml").read_text(), "routes.yaml", env=env)
    assert resolve(table, "claude-sonnet-4-5").primary.model.name == "gpt-6-astra"
    assert resolve(table, "claude-haiku-4-5").primary.model.name == "deepseek-flash"
    assert table.providers["openai"].base_url == "http://127.0.0.1:1/v1"
    assert {w.message.split(":")[0] for w in table.warnings} == {       # the providers the routes use
        "providers.openai.api_key_env", "providers.deepseek.api_key_env"}


BROKEN = [
    ("providers:\n  a: [\n", "x.yaml:2:6: the [ opened here is not closed: add ]"),
    (DESIGN_MINIMAL.replace("    api_key_env: MOCK_KEY\n", "    api_key_env: MOCK_KEY\n    headers: {Host: evil}\n"),
     "x.yaml:5:15: providers.mock.headers.Host: ccproxyd sets this header itself"),
    (DESIGN_MINIMAL.replace("    api_key_env: MOCK_KEY\n", "    api_key_env: MOCK_KEY\n    headers: {X-Title: \"a\\r\\nb\"}\n"),
     "x.yaml:5:24: providers.mock.headers.X-Title: header values must be printable ASCII"),
    (DESIGN_MINIMAL.replace("    api_key_env: MOCK_KEY\n", "    api_key_env: MOCK_KEY\n    headers: {\"bad name\": x}\n"),
     "x.yaml:5:15: providers.mock.headers.bad name: not a valid header name"),
    ("", "x.yaml:1:1: the routing table is empty"),
    (DESIGN_MINIMAL.replace("    api_key_env: MOCK_KEY\n", "    api_key_env: MOCK_KEY\n    tls: yes\n"),
     "x.yaml:5:5: providers.mock: unknown key 'tls'"),
    (DESIGN_MINIMAL.replace("context_window: 128000", "context_window: big"),
     "x.yaml:8:21: models.gpt-mock.context_window: 'big' is not of type 'integer'"),
    (DESIGN_MINIMAL.replace("provider: mock", "provider: nobody"),
     "x.yaml:7:15: models.gpt-mock.provider: unknown provider 'nobody'"),
    (DESIGN_MINIMAL.replace("model: gpt-mock", "model: gpt-nope"),
     "x.yaml:12:12: routes[0]: unknown model 'gpt-nope'"),
    (DESIGN_MINIMAL + "  - match: claude-x\n    model: gpt-mock\n",
     "x.yaml:13:5: routes[1]: unreachable"),
    (DESIGN_MINIMAL.replace("model: gpt-mock", "model: gpt-mock\n    fallbacks: [gpt-mock]"),
     "x.yaml:13:17: routes[0]: model 'gpt-mock' appears twice"),
    (DESIGN_MINIMAL.replace("base_url: http://127.0.0.1:9999/v1", "base_url: ${UNSET_BASE_FOR_TEST}"),
     "x.yaml:3:15: environment variable UNSET_BASE_FOR_TEST is not set"),
    (DESIGN_MINIMAL.replace("models:\n", "models:\n  gpt-mock: {provider: mock, context_window: 1, max_output_tokens: 1}\n"),
     "x.yaml:7:3: duplicate key 'gpt-mock'"),
    (DESIGN_MINIMAL.replace("base_url: http://127.0.0.1:9999/v1", "base_url: !env BASE"),
     "x.yaml:3:15: YAML: could not determine a constructor"),
    (DESIGN_MINIMAL.replace("max_output_tokens: 16384", "max_output_tokens: 16384\n    prices: [{up_to: 200, input: 1, output: 2}, {up_to: 100, input: 1, output: 2}]"),
     "x.yaml:10:57: models.gpt-mock.prices[1].up_to: tiers must be in ascending order"),
]


@pytest.mark.parametrize("text,expected", BROKEN, ids=[e for _, e in BROKEN])
def test_broken_tables_are_located(text, expected):
    with pytest.raises(ConfigError) as info:
        config.load(text, "x.yaml", env={})
    lines = [str(p) for p in info.value.problems]
    assert any(line.startswith(expected) for line in lines), lines


def test_unreadable_paths(tmp_path):
    for path, needle in ((tmp_path, "is a directory"), (tmp_path / "missing.yaml", "no such file")):
        with pytest.raises(ConfigError) as info:
            config.load_file(str(path))
        assert str(info.value).startswith(f"{path}:1:1: ") and needle in str(info.value)


def test_unmatched_model_is_not_found():
    table = config.load(DESIGN_MINIMAL.replace('"*"', '"claude-*"'), env={})
    with pytest.raises(NotFound):
        resolve(table, "gpt-4")


def test_table_is_immutable():
    table = config.load(DESIGN_MINIMAL, env={})
    with pytest.raises(TypeError):
        table.models["x"] = table.models["gpt-mock"]       # type: ignore[index]
    with pytest.raises(AttributeError):
        table.routes[0].model = "other"                     # type: ignore[misc]


def test_check_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "ccproxyd", "check", str(ROOT / "routes.yaml")],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(DESIGN_MINIMAL.replace("model: gpt-mock", "model: gpt-nope"))
    res = subprocess.run([sys.executable, "-m", "ccproxyd", "check", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert re.match(rf"^{re.escape(str(bad))}:12:12: routes\[0\]: unknown model 'gpt-nope'", res.stdout)


def test_daemon_serves_the_bundled_table(tmp_path):
    """What `make run` does: the bundled routes.yaml, no provider keys set: it starts, /health is 200."""
    from .conftest import Daemon
    import httpx2

    env = {k: "" for k in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY")}
    daemon = Daemon(ROOT / "routes.yaml", env=env, log_path=tmp_path / "daemon.log")
    try:
        health = httpx2.get(daemon.url + "/health")
        assert health.status_code == 200 and health.json()["routes"]["path"] == str(ROOT / "routes.yaml")
        r = httpx2.post(daemon.url + "/v1/messages", json={"model": "claude-opus-4-1", "max_tokens": 5,
                                                          "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 500 and "OPENAI_API_KEY" in r.json()["error"]["message"]
    finally:
        daemon.stop()
    assert "variable OPENAI_API_KEY is not set" in (tmp_path / "daemon.log").read_text()


CONDITIONAL = DESIGN_MINIMAL.replace("""routes:
  - match: "*"
    model: gpt-mock
""", """  long-ctx: {provider: mock, context_window: 2000000, max_output_tokens: 30000}
  thinker: {provider: mock, context_window: 200000, max_output_tokens: 30000, reasoning: true}
  tooler: {provider: mock, context_window: 200000, max_output_tokens: 30000}
routes:
  - match: "claude-*"
    when: {min_input_tokens: 100000}
    model: long-ctx
  - match: "claude-*"
    when: {thinking: true}
    model: thinker
  - match: "*"
    when: {tools: true}
    model: tooler
    fallbacks: [gpt-mock]
  - match: "*"
    model: gpt-mock
""")


@pytest.mark.parametrize("name,thinking,tools,tokens,expected", [
    ("claude-opus-4", False, False, 200000, "long-ctx"),
    ("claude-opus-4", True, True, 5000, "thinker"),
    ("claude-opus-4", False, True, 5000, "tooler"),
    ("gpt-4", True, False, 200000, "gpt-mock"),
    ("claude-opus-4", False, False, 99999, "gpt-mock"),
])
def test_when_conditions(name, thinking, tools, tokens, expected):
    from ccproxyd.config.routing import Features

    table = config.load(CONDITIONAL, env={})
    counted = []
    features = Features(thinking=thinking, tools=tools, count_input=lambda: counted.append(1) or tokens)
    decision = resolve(table, name, features)
    assert decision.primary.model.name == expected
    assert len(counted) <= 1                      # counted once, and only if a condition asks
    if not name.startswith("claude"):
        assert counted == []


def test_a_decision_is_kept_by_its_table_for_the_name_and_features_that_decide_it(monkeypatch):
    """Kept (the same object again) per model name as sent and per thinking, display, tools and
    subagent; never for a table whose routes count input tokens; at most DECISIONS_KEPT a table."""
    from ccproxyd.config import routing
    from ccproxyd.config.routing import Features

    table = config.load(CONDITIONAL.replace("when: {min_input_tokens: 100000}", "when: {subagent: true}"), env={})
    first = resolve(table, "claude-opus-4", Features(tools=True))
    assert resolve(table, "claude-opus-4", Features(tools=True)) is first and first.primary.model.name == "tooler"
    assert resolve(table, "Claude-Opus-4", Features(tools=True)).requested == "Claude-Opus-4"    # echoed as sent
    assert resolve(table, "claude-opus-4", Features(subagent=True)).primary.model.name == "long-ctx"
    thinking = resolve(table, "claude-opus-4", Features(thinking=True, display="omitted"))
    assert thinking.primary.model.name == "thinker" and thinking.thinking == "omitted"
    assert resolve(table, "claude-opus-4", Features(thinking=True, display="summarized")).thinking == "summarized"
    assert resolve(config.load(CONDITIONAL.replace("when: {min_input_tokens: 100000}", "when: {subagent: true}"),
                               env={}), "claude-opus-4", Features(tools=True)) is not first   # a reload: its own
    counting = config.load(CONDITIONAL, env={})
    resolve(counting, "gpt-4", Features())
    assert counting.decisions == {}
    monkeypatch.setattr(routing, "DECISIONS_KEPT", 3)
    fresh = config.load(DESIGN_MINIMAL, env={})
    assert [resolve(fresh, f"gpt-{i}", Features()).requested for i in range(5)] == [f"gpt-{i}" for i in range(5)]
    assert len(fresh.decisions) == 3


LONG_ROUTE = """  - match: "claude-*"
    when: {min_input_tokens: 100000}
    model: long-ctx
"""


@pytest.mark.parametrize("name,thinking,counts", [
    ("claude-opus-4", False, True),      # the first route that matches asks for the count
    ("gpt-4", False, False),             # no route with min_input_tokens matches the name
    ("claude-opus-4", True, True),
])
def test_the_input_is_counted_first_only_where_routing_asks(name, thinking, counts):
    from ccproxyd.config.routing import Features, counts_input

    table = config.load(CONDITIONAL, env={})
    features = Features(thinking=thinking, count_input=lambda: pytest.fail("counted while deciding"))
    assert counts_input(table, name, features) is counts
    plain = config.load(CONDITIONAL.replace("when: {min_input_tokens: 100000}", "when: {tools: true}"), env={})
    assert not plain.counts_input and not counts_input(plain, name, features)
    thinker = """  - match: "claude-*"
    when: {thinking: true}
    model: thinker
"""
    later = config.load(CONDITIONAL.replace(LONG_ROUTE, "").replace(thinker, thinker + LONG_ROUTE), env={})
    assert counts_input(later, name, features) is (counts and not thinking)   # a thinking request stops first


def test_route_command_shows_conditions(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(CONDITIONAL)
    out = subprocess.run([sys.executable, "-m", "ccproxyd", "route", "claude-opus-4", "--routes", str(path),
                          "--tools"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "claude-opus-4 -> routes[2] (match '*')"
    assert "primary: tooler" in out.stdout and "fallback 1: gpt-mock" in out.stdout
    out = subprocess.run([sys.executable, "-m", "ccproxyd", "route", "claude-opus-4", "--routes", str(path),
                          "--input-tokens", "150000"], capture_output=True, text=True, cwd=ROOT)
    assert "primary: long-ctx" in out.stdout


@pytest.mark.parametrize("preset", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_provider_presets_are_valid(preset):
    table = config.load(preset.read_text(), str(preset), env={})
    assert table.routes and table.models


def test_yaml_merge_keys_work():
    text = DESIGN_MINIMAL.replace("models:\n  gpt-mock:\n    provider: mock\n    context_window: 128000\n    max_output_tokens: 16384\n",
                                  "models:\n  gpt-mock: &base\n    provider: mock\n    context_window: 128000\n"
                                  "    max_output_tokens: 16384\n  gpt-big:\n    <<: *base\n    context_window: 400000\n")
    table = config.load(text, env={})
    assert table.models["gpt-big"].context_window == 400000 and table.models["gpt-big"].provider == "mock"
