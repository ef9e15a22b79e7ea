"""YAML slips in routes.yaml, told in plain words at the line where the fix goes.

Each case breaks one line of GOOD; the expected line is counted by hand from GOOD's numbering
below (PyYAML itself reports several of them one line later, or in parser terms)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ccproxyd.cli import main as cli
from ccproxyd.config import table as config
from ccproxyd.errors import ConfigError
from ccproxyd.config.reload import Reloader

GOOD = """\
providers:
  openai:
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
models:
  gpt-5:
    provider: openai
    context_window: 400000
    max_output_tokens: 128000
routes:
  - match: "*"
    model: gpt-5
"""
#  1 providers:             5 models:                    9     max_output_tokens: 128000
#  2   openai:              6   gpt-5:                  10 routes:
#  3     base_url: ...      7     provider: openai      11   - match: "*"
#  4     api_key_env: ...   8     context_window: ...   12     model: gpt-5


def broken(line: int, new: str) -> str:
    lines = GOOD.splitlines()
    lines[line - 1] = new
    return "\n".join(lines) + "\n"


SLIPS = [
    ("tab indentation", broken(8, "\tcontext_window: 400000"), 8, ["tab", "spaces"]),
    ("over-indented key under a value", broken(4, "      api_key_env: OPENAI_API_KEY"), 4,
     ["`api_key_env:` is indented more than `base_url:` on line 3", "indent it 4 spaces"]),
    ("over-indented key in a list item", broken(12, "       model: gpt-5"), 12,
     ["`model:` is indented more than `match:` on line 11", "indent it 4 spaces"]),
    ("under-indented key", broken(9, "   max_output_tokens: 128000"), 9,
     ["`max_output_tokens:` is indented 3 spaces", "`context_window:` on line 8 (4 spaces)"]),
    ("missing colon between key and value", broken(3, "    base_url https://api.openai.com/v1"), 3,
     ["`base_url` has no colon", "`base_url: <value>`"]),
    ("missing colon after a key that holds others", broken(6, "  gpt-5"), 6,
     ["`gpt-5` has no colon after it", "`gpt-5:`"]),
    ("unclosed quote", broken(11, '  - match: "*'), 11, ['the " opened here is never closed']),
    ("unclosed bracket", broken(12, "    model: gpt-5\n    fallbacks: [gpt-5-mini\n  - match: claude-haiku*\n"
                                     "    model: gpt-5"), 13, ["the [ opened here is not closed: add ]"]),
    ("list item without its dash", GOOD + '  match: "claude-*"\n', 13,
     ["at the indentation of the list items (the `-` on line 11)", "`- match: …`"]),
    ("list item indented off its siblings", GOOD + " - match: claude-haiku*\n", 13,
     ["`- match:` is indented 1 space", "the `-` on line 11 (2 spaces)"]),
    ("a value with `: ` in it", broken(3, "    base_url: http://proxy: 8080/v1"), 3,
     ["the value of `base_url` contains `: `", "quotes"]),
]


@pytest.mark.parametrize("text,line,words", [s[1:] for s in SLIPS], ids=[s[0] for s in SLIPS])
def test_yaml_slips_are_explained_at_the_line_to_fix(text, line, words):
    with pytest.raises(ConfigError) as info:
        config.load(text, "routes.yaml", env={"OPENAI_API_KEY": "sk-test-key-0000"})
    problem = info.value.problems[0]
    assert problem.line == line, str(problem)
    for word in words:
        assert word in problem.message, str(problem)
    assert "<block" not in problem.message and "scanning" not in problem.message      # no parser jargon


def test_check_says_it_in_plain_words(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(broken(12, "       model: gpt-5"))
    result = CliRunner().invoke(cli.main, ["check", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith(f"{path}:12:8: `model:` is indented more than `match:` on line 11")


def test_a_refused_reload_says_it_in_plain_words(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    table = config.load_file(str(path), env={"OPENAI_API_KEY": "sk-test-key-0000"})
    reloader = Reloader(SimpleNamespace(table=table), str(path))
    path.write_text(broken(9, "   max_output_tokens: 128000"))
    assert reloader.reload("file changed") is False
    assert reloader.state.last_error.startswith(f"{path}:9:4: `max_output_tokens:` is indented 3 spaces")


@pytest.mark.parametrize("slip", [
    "    headers: {{x: 1}}\n    Authorization Bearer {secret}",       # a header line without its colon
    "  {secret}",                                                       # a value alone on its line
    '  match: "{secret}"',                                              # a list item without its dash
])
def test_a_slip_never_quotes_a_value_that_may_be_a_secret(slip):
    """A refused edit's message reaches /health (no client key needed) and the log: it names the
    key and the line, never the rest of the line."""
    secret = "sk-or-v1-0123456789abcdef"
    text = GOOD + slip.format(secret=secret) + "\n"
    with pytest.raises(ConfigError) as info:
        config.load(text, "routes.yaml", env={"OPENAI_API_KEY": "sk-test-key-0000"})
    assert secret not in str(info.value) and "0123456789" not in str(info.value)
