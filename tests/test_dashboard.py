"""The dashboard at /ui, in a real headless Chromium: it loads, shows the requests just made, and
the console stays clean; behind client keys it asks for one."""

from __future__ import annotations

import httpx2
import pytest

from ccproxyd.server import dashboard
from ccproxyd.observe.access import BUCKETS, Metrics

from .browser import Browser
from .conftest import TEST_ROUTES, Daemon, free_port
from .fake_upstream import Script, text_script, usage

BODY = {"model": "claude-opus-4-1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
PRICED = """
providers:
  openai: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  gpt-5:
    provider: openai
    context_window: 400000
    max_output_tokens: 128000
    prices: [{{input: 1.25, output: 10.0}}]
claude_prices:
  claude-opus-4-1: [{{input: 15.00, output: 75.00}}]
routes:
  - match: "*"
    model: gpt-5
"""


def bars(browser: Browser, figure: str) -> dict:
    return browser.evaluate(f"Object.fromEntries([...document.querySelectorAll('#{figure} [data-label]')]"
                            ".map(g => [g.dataset.label, Number(g.dataset.value)]))")


@pytest.fixture
def browser():
    b = Browser()
    yield b
    b.close()


def test_dashboard_shows_the_requests_just_made(tmp_path, fake, browser):
    routes = tmp_path / "routes.yaml"
    routes.write_text(PRICED.format(url=fake.url))
    daemon = Daemon(routes, log_path=tmp_path / "d.log")
    try:
        # 1000 in, 500 out: $0.00625 at gpt-5's, $0.0525 at Opus' prices; the first has 800 of its
        # input from the prompt cache (no cached price: billed as input), so its misses cost 200 x
        # $1.25/M = $0.00025, the second's 1000 x $1.25/M = $0.00125: $0.0015, 800 of 2000 cached
        for stream, cached in ((True, 800), (False, 0)):
            fake.push(text_script("done", use=usage(1000, 500, cached=cached)))
            assert httpx2.post(daemon.url + "/v1/messages", json=dict(BODY, stream=stream)).status_code == 200
        fake.push(Script(status=400, body={"error": {"message": "bad thing", "type": "invalid_request_error"}}))
        assert httpx2.post(daemon.url + "/v1/messages", json=BODY).status_code == 400
        version = httpx2.get(daemon.url + "/health").json()["routes"]["version"]

        browser.open(daemon.url + "/ui")
        assert browser.wait_for("document.body.dataset.state === 'loaded'"), browser.evaluate("document.body.innerText")
        text = lambda element_id: browser.evaluate(f"document.getElementById('{element_id}').textContent")  # noqa: E731
        assert text("requests") == "3"
        assert text("cost") == "$0.0125" and text("savings") == "$0.0925"
        assert bars(browser, "spend-by-model") == {"gpt-5": pytest.approx(0.0125)}
        assert list(bars(browser, "spend-by-day").values()) == [pytest.approx(0.0125)]
        assert bars(browser, "spend-by-route") == {"*": pytest.approx(0.0125)}
        cache_row = browser.evaluate("Object.fromEntries([...document.querySelectorAll("
                                     "'#cache-by-route tr[data-route=\"*\"] td')].map(td => [td.className, td.textContent]))")
        assert cache_row == {"route": "*", "requests": "2", "input": "2000", "cached": "40.0 %",
                             "misses": "$0.0015", "spent": "$0.0125"}
        assert bars(browser, "requests-by-model") == {"gpt-5": 3}
        assert bars(browser, "requests-by-status") == {"200": 2, "400": 1}
        assert bars(browser, "errors-by-type") == {"invalid_request_error": 1}
        assert text("table-version") == f"table {version}"
        assert browser.evaluate("document.querySelector('#providers tr[data-provider=openai] td:nth-child(2)')"
                                ".textContent") == "closed"
        assert text("table-last-refused-edit") == "none"
        assert browser.console_errors() == []
    finally:
        daemon.stop()


DEARER = """
providers:
  mock: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  dear: {{provider: mock, context_window: 400000, max_output_tokens: 128000, prices: [{{input: 5.0, output: 30.0}}]}}
  unpriced: {{provider: mock, context_window: 400000, max_output_tokens: 128000}}
routes:
  - {{match: "claude-haiku-*", model: dear}}
  - {{match: "*", model: unpriced}}
claude_prices:
  claude-haiku-4-5: [{{input: 1.00, output: 5.00}}]
"""


def test_dashboard_shows_negative_savings_and_unknown_never_zero(tmp_path, fake, browser):
    routes = tmp_path / "routes.yaml"
    routes.write_text(DEARER.format(url=fake.url))
    daemon = Daemon(routes, log_path=tmp_path / "d.log")
    try:
        fake.push(text_script("dear", use=usage(1000, 500)))     # $0.02 at dear's prices, $0.0035 at Haiku 4.5's
        assert httpx2.post(daemon.url + "/v1/messages", json=dict(BODY, model="claude-haiku-4-5")).status_code == 200
        browser.open(daemon.url + "/ui")
        assert browser.wait_for("document.body.dataset.state === 'loaded'"), browser.evaluate("document.body.innerText")
        text = lambda element_id: browser.evaluate(f"document.getElementById('{element_id}').textContent")  # noqa: E731
        assert text("cost") == "$0.0200" and text("savings") == "−$0.0165"
        assert browser.evaluate("document.getElementById('savings').classList.contains('negative')") is True
        assert "cost more than the Claude list price" in text("savings-note")

        fake.push(text_script("who knows", use=usage(1000, 500)))   # no price on either side
        assert httpx2.post(daemon.url + "/v1/messages", json=dict(BODY, model="claude-mystery-1")).status_code == 200
        browser.evaluate("location.reload()")
        assert browser.wait_for("document.body.dataset.state === 'loaded' && "
                                "document.getElementById('cost').textContent.includes('unknown')"), text("cost")
        assert text("cost") == "$0.0200 (1 request unknown)" and text("savings") == "−$0.0165 (1 request unknown)"
        assert bars(browser, "spend-by-model") == {"dear": pytest.approx(0.02), "unpriced": None}   # no number
        assert browser.evaluate("[...document.querySelectorAll('#spend-by-model [data-label=unpriced] text')]"
                                ".map(t => t.textContent)") == ["unpriced", "unknown"]
        assert browser.console_errors() == []
    finally:
        daemon.stop()


def test_dashboard_behind_client_keys_asks_for_one(tmp_path, fake, browser):
    routes = tmp_path / "routes.yaml"
    routes.write_text(TEST_ROUTES.format(url=fake.url, dead_port=free_port()) + "client_keys: [TEAM_KEY]\n")
    daemon = Daemon(routes, env={"TEAM_KEY": "team-secret-1"}, log_path=tmp_path / "d.log")
    try:
        assert httpx2.get(daemon.url + "/ui/data").status_code == 401
        assert httpx2.get(daemon.url + "/ui/data", headers={"x-api-key": "team-secret-1"}).status_code == 200
        assert httpx2.get(daemon.url + "/ui/nothing.js").status_code == 404
        browser.open(daemon.url + "/ui")
        assert browser.wait_for("document.body.dataset.state === 'key'")
        browser.evaluate("document.getElementById('key').value = 'team-secret-1';"
                         "document.getElementById('key-form').requestSubmit()")
        assert browser.wait_for("document.body.dataset.state === 'loaded'")
        assert browser.evaluate("document.getElementById('requests').textContent") == "0"
    finally:
        daemon.stop()


def histogram(seconds: list[float]) -> list:
    m = Metrics()
    for s in seconds:
        m.observe("h", s)
    return m.histograms.get("h", [])


@pytest.mark.parametrize("observed, q, expected", [
    ([], 0.5, None),
    ([0.003], 0.5, 0.0025),                          # one value in the first bucket (0, 5 ms]: its middle
    ([0.003, 0.003, 0.2, 0.2], 0.5, 0.005),          # rank 2 of 4 ends the first bucket
    ([0.003, 0.003, 0.2, 0.2], 0.75, 0.175),         # rank 3: half-way through (0.1, 0.25]
    ([1000.0], 0.95, BUCKETS[-1]),                   # past the last bound: the last bound
])
def test_quantile_interpolates_inside_the_bucket(observed, q, expected):
    value = dashboard.quantile(histogram(observed), q)
    assert value == expected if expected is None else value == pytest.approx(expected)


def test_prometheus_buckets_count_everything_at_or_below_their_bound_over_workers():
    one, other = Metrics(), Metrics()
    for s in (0.003, 0.02, 0.02, 7.0, 1000.0):        # 1000 s: past the last bound, in +Inf only
        one.observe("h", s)
    other.observe("h", 0.005)                         # on a bound: in that bound's bucket
    lines = [line for line in one.merged([other.snapshot()]).render().splitlines() if line.startswith("h_")]
    counts = {line.split('le="')[1].split('"')[0]: int(line.split()[-1]) for line in lines if "_bucket" in line}
    assert counts == {"0.005": 2, "0.01": 2, "0.025": 4, "0.05": 4, "0.1": 4, "0.25": 4, "0.5": 4, "1": 4,
                      "2.5": 4, "5": 4, "10": 5, "30": 5, "60": 5, "120": 5, "300": 5, "+Inf": 6}
    assert "h_count 6" in lines and "h_sum 1007.05" in lines
