"""Missing-key warnings: only for providers a route, fallback or alias uses, each said once (at
start, and once more only when an edit brings a new one), however many workers reload; a provider
no route uses gets one plain note."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace
from unittest import mock

from click.testing import CliRunner

from ccproxyd.cli import main as cli
from ccproxyd.config import table as config
from ccproxyd.config.reload import Reloader
from ccproxyd.config.settings import Settings

from .conftest import ROOT

ROUTES = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
  used: {{base_url: "{url}", api_key_env: CCPROXYD_TEST_USED_KEY}}
  spare: {{base_url: "{url}", api_key_env: CCPROXYD_TEST_SPARE_KEY}}
  backup: {{base_url: "{url}", api_key_env: CCPROXYD_TEST_BACKUP_KEY}}
models:
  gpt-mock: {{provider: mock, context_window: 1000, max_output_tokens: 100}}
  used-model: {{provider: used, context_window: 1000, max_output_tokens: 100}}
  spare-model: {{provider: spare, context_window: 1000, max_output_tokens: 100}}
  backup-model: {{provider: backup, context_window: 1000, max_output_tokens: 100}}
routes:
  - match: "claude-used*"
    model: used-model
  - match: "*"
    model: gpt-mock
"""
USED = "variable CCPROXYD_TEST_USED_KEY is not set"
BACKUP = "variable CCPROXYD_TEST_BACKUP_KEY is not set"
NOTE = "no route uses providers backup, spare, so CCPROXYD_TEST_BACKUP_KEY and CCPROXYD_TEST_SPARE_KEY need not be set"


def test_only_providers_the_routes_use_are_warned_about():
    table = config.load((ROOT / "routes.yaml").read_text(), "routes.yaml", env={})
    assert [w.message.split(":")[0] for w in table.warnings] == ["providers.openai.api_key_env"]
    assert table.notes == ("routes.yaml: note: no route uses providers deepseek, openrouter, so DEEPSEEK_API_KEY "
                           "and OPENROUTER_API_KEY need not be set",)
    table = config.load((ROOT / "routes.yaml").read_text(), "routes.yaml", env={"SMALL_MODEL_NAME": "deepseek-flash"})
    assert {w.message.split(":")[0] for w in table.warnings} == {"providers.openai.api_key_env",
                                                                 "providers.deepseek.api_key_env"}
    text = ROUTES.format(url="http://127.0.0.1:1/v1")
    table = config.load(text.replace("model: used-model", "model: used-model\n    fallbacks: [backup-model]"),
                        env={"MOCK_KEY": "k" * 10})
    assert sorted(w.message.split(":")[0] for w in table.warnings) == ["providers.backup.api_key_env",
                                                                       "providers.used.api_key_env"]
    table = config.load(text + "aliases:\n  claude-spare: spare-model\n", env={"MOCK_KEY": "k" * 10})
    assert "providers.spare.api_key_env" in {w.message.split(":")[0] for w in table.warnings}


def test_each_warning_once_over_workers_and_reloads(tmp_path, caplog):
    """Two reloaders sharing a metrics directory are two workers of one daemon, as `serve --workers
    2` makes them (the start-up warnings are printed by the manager alone, before any worker)."""
    routes = tmp_path / "routes.yaml"
    text = ROUTES.format(url="http://127.0.0.1:1/v1")
    routes.write_text(text)
    env = {"MOCK_KEY": "k" * 10}
    shared = tmp_path / "metrics"
    shared.mkdir()
    workers = [Reloader(SimpleNamespace(table=config.load_file(str(routes), env=env),
                                        settings=Settings(metrics_dir=str(shared))), str(routes)) for _ in range(2)]

    def edit(new: str) -> str:
        routes.write_text(new)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ccproxyd.reload"):
            for worker in workers:
                worker.reload("file changed")
        return caplog.text

    with mock.patch.dict(os.environ, env):
        said = edit(text.replace('  - match: "*"', '  - match: claude-extra\n    model: gpt-mock\n  - match: "*"'))
        assert said.count("-> version") == 2 and USED not in said          # both swapped; nothing new to say
        said = edit(text.replace("model: used-model", "model: used-model\n    fallbacks: [backup-model]"))
        assert said.count(BACKUP) == 1 and USED not in said                 # the new warning, once
        said = edit(text.replace("    model: gpt-mock", "      model: gpt-mock"))           # broken
        assert said.count("routing table refused") == 1
        said = edit(text)                                                   # good again, then the same slip
        said = edit(text.replace("    model: gpt-mock", "      model: gpt-mock"))
        assert said.count("routing table refused") == 1
    assert [w.state.rejected for w in workers] == [2, 2]


def test_check_warns_once_and_notes_the_unused(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES.format(url="http://127.0.0.1:1/v1"))
    result = CliRunner().invoke(cli.main, ["check", str(routes)], env={"MOCK_KEY": "k" * 10})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    money = [line for line in lines if "has no price" in line]       # the test's models have no price
    assert money and all("warning" in line for line in money)
    assert sum(USED in line for line in lines) == 1 and sum("warning" in line for line in lines) == 1 + len(money)
    assert sum(NOTE in line for line in lines) == 1
