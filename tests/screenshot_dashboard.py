"""Makes the README's picture of the dashboard: a daemon in front of the fake upstream, a few
dozen priced requests on three routes (one refused by the upstream), then /ui in headless
Chromium.  Run: `.venv/bin/python -m tests.screenshot_dashboard docs/dashboard.png`."""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

import httpx2

from .browser import Browser
from .conftest import Daemon
from .fake_upstream import FakeUpstream, Script, text_script, usage

ROUTES = """
providers:
  openai: {{base_url: "{url}", api_key_env: MOCK_KEY}}
  deepseek: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  gpt-5:
    provider: openai
    context_window: 400000
    max_output_tokens: 128000
    prices: [{{input: 1.25, output: 10.0, cached_input: 0.125}}]
  gpt-5-mini:
    provider: openai
    context_window: 400000
    max_output_tokens: 128000
    prices: [{{input: 0.25, output: 2.0, cached_input: 0.025}}]
  deepseek-chat:
    provider: deepseek
    context_window: 128000
    max_output_tokens: 8192
    prices: [{{input: 0.28, output: 0.42, cached_input: 0.028}}]
claude_prices:
  "claude-opus*": [{{input: 15.00, output: 75.00, cached_input: 1.50}}]
  "claude-sonnet*": [{{input: 3.00, output: 15.00, cached_input: 0.30}}]
  "claude-haiku*": [{{input: 1.00, output: 5.00, cached_input: 0.10}}]
routes:
  - match: "claude-opus*"
    model: gpt-5
  - match: "claude-haiku*"
    model: gpt-5-mini
  - match: "*"
    model: deepseek-chat
"""


def main(out: str) -> None:
    rng = random.Random(7)
    fake = FakeUpstream().start()
    with tempfile.TemporaryDirectory() as tmp:
        routes = Path(tmp) / "routes.yaml"
        routes.write_text(ROUTES.format(url=fake.url))
        daemon = Daemon(routes, extra_args=("--no-cache",))
        try:
            for i in range(40):
                model = rng.choice(["claude-opus-4-1", "claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"])
                if i == 17:
                    fake.push(Script(status=400, body={"error": {"message": "bad", "type": "invalid_request_error"}}))
                prompt = rng.randint(8_000, 60_000)
                fake.push(text_script("done", use=usage(prompt, rng.randint(200, 3000), cached=prompt * 3 // 4)))
                httpx2.post(daemon.url + "/v1/messages", timeout=30, json={
                    "model": model, "max_tokens": 4000, "stream": rng.random() < 0.7,
                    "messages": [{"role": "user", "content": "hi"}]})
            browser = Browser(width=1280, height=1100)
            try:
                browser.open(daemon.url + "/ui")
                assert browser.wait_for("document.body.dataset.state === 'loaded'")
                browser.screenshot(out)
            finally:
                browser.close()
        finally:
            daemon.stop()
            fake.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard.png")
