"""Cost at each tier boundary, cached input at its own rate, savings against Claude list prices."""

from __future__ import annotations

import pytest

from ccproxyd import config, pricing

# The tiers these tests work through by hand (routes.yaml no longer carries prices: the packaged
# catalog prices the bundled models).
TABLE = config.load("""
providers:
  p: {base_url: "http://127.0.0.1:9/v1"}
models:
  x-ai/grok-4-fast:
    provider: p
    context_window: 2000000
    max_output_tokens: 30720
    prices:
      - {up_to: 128000, input: 0.20, output: 0.50}
      - {input: 0.50, output: 1.00}
  gpt-5:
    provider: p
    context_window: 400000
    max_output_tokens: 128000
    prices: [{input: 1.25, output: 10.00, cached_input: 0.125}]
routes:
  - {match: "*", model: gpt-5}
claude_prices:
  opus: [{input: 15.00, output: 75.00, cached_input: 1.50}]
  sonnet:
    - {up_to: 200000, input: 3.00, output: 15.00, cached_input: 0.30}
    - {input: 6.00, output: 22.50, cached_input: 0.60}
  haiku: [{input: 1.00, output: 5.00, cached_input: 0.10}]
""", env={})
GROK = TABLE.models["x-ai/grok-4-fast"].prices
GPT5 = TABLE.models["gpt-5"].prices


@pytest.mark.parametrize("usage,expected", [
    ({"input_tokens": 128000, "output_tokens": 1000}, (128000 * 0.20 + 1000 * 0.50) / 1e6),
    ({"input_tokens": 128001, "output_tokens": 1000}, (128001 * 0.50 + 1000 * 1.00) / 1e6),
    ({"input_tokens": 1, "output_tokens": 0}, 0.20 / 1e6),
    ({"input_tokens": 100000, "cache_read_input_tokens": 28000, "output_tokens": 10}, (128000 * 0.20 + 10 * 0.50) / 1e6),
    ({"input_tokens": 100000, "cache_read_input_tokens": 28001, "output_tokens": 10}, (128001 * 0.50 + 10 * 1.00) / 1e6),
])
def test_grok_tiers(usage, expected):
    assert pricing.cost(GROK, usage) == pytest.approx(expected, rel=1e-12)


def test_cached_input_rate_and_no_prices():
    usage = {"input_tokens": 1000, "cache_read_input_tokens": 9000, "output_tokens": 500}
    assert pricing.cost(GPT5, usage) == pytest.approx((1000 * 1.25 + 9000 * 0.125 + 500 * 10) / 1e6, rel=1e-12)
    assert pricing.cost((), usage) is None


def test_claude_reference_and_savings():
    opus = pricing.claude_reference(TABLE, "claude-opus-4-1-20250805")
    usage = {"input_tokens": 10000, "output_tokens": 2000}
    assert pricing.cost(opus, usage) == pytest.approx((10000 * 15 + 2000 * 75) / 1e6)
    sonnet = pricing.claude_reference(TABLE, "claude-sonnet-4-5")
    assert pricing.cost(sonnet, {"input_tokens": 200001, "output_tokens": 0}) == pytest.approx(200001 * 6 / 1e6)
    assert pricing.claude_reference(TABLE, "gpt-4") == ()


@pytest.mark.parametrize("usage, reasoning", [
    (None, 0),
    ({"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60}, 0),
    ({"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": {"reasoning_tokens": 32}}, 32),
    ({"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": {"reasoning_tokens": 0},
      "total_tokens": 90}, 0),                                             # reported: the report wins
    ({"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 90}, 30),   # xAI: beyond completion_tokens
    ({"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": None}, 0),
])
def test_reasoning_tokens_of_an_openai_usage(usage, reasoning):
    from ccproxyd.translate.stream import reasoning_tokens

    assert reasoning_tokens(usage) == reasoning


def test_responses_usage_keeps_its_reasoning_count():
    from ccproxyd.translate.responses import _chat_usage
    from ccproxyd.translate.stream import reasoning_tokens

    usage = {"input_tokens": 100, "output_tokens": 80, "input_tokens_details": {"cached_tokens": 20},
             "output_tokens_details": {"reasoning_tokens": 64}}
    assert reasoning_tokens(_chat_usage(usage)) == 64
