"""`make bench`'s side-by-side table: the baseline commit against today, in one run.

The baseline commit (BENCH_BASELINE, d0c39f5 by default: before message threads, the ledger and
team mode) runs as a second daemon, from `git archive` of that commit, on the same upstreams.
Per round (BENCH_ROUNDS, 3), each row's requests alternate with direct ones, the rows taking
turns in BLOCKS blocks (so that a machine whose speed drifts over seconds, as a shared VM's does,
moves every row alike), then 16 clients, row after row:

- plain HTTP/1.1 at the baseline and today, TLS HTTP/1.1 and TLS HTTP/2 today: the bench's
  40-chunk answer, sent by the upstream at once (per-request work dominates);
- a long conversation at the baseline and today: the same request TURNS tool calls into a
  session (what Claude Code sends late in a task), the same answer;
- paced, at the baseline and today: 16 concurrent streams of CHUNKS chunks a GAP_S apart, so
  that each chunk arrives in a read of its own, as a model's tokens do; the CPU per chunk is
  what a long answer costs.

Ranges are over the rounds; the issue's targets are printed as ratios per round.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx2
import orjson

from .bench import (BASELINE, ROOT, ROUNDS, N_SEQUENTIAL, claude_code_like_request, concurrent, cpu_seconds, free_port,
                    interleaved, pin_daemon, start, timed, wait_ready)

CHUNKS, GAP_S, PACED_STREAMS = 200, 0.003, 48
TURNS = 60                               # tool calls in the long conversation (121 messages)
BLOCKS = 8                               # turns the rows take in a round (N_SEQUENTIAL // BLOCKS requests each)
PACED_MODEL = "claude-paced-chunks"      # the route to the paced upstream, in both daemons' tables


def long_conversation() -> dict:
    """The bench's request deep into a Claude Code session: TURNS rounds of the model reading a
    file (text and a tool_use) and the file coming back (a tool_result of about 1.5 KB)."""
    body = claude_code_like_request()
    messages = body["messages"]
    for turn in range(TURNS):
        call = f"toolu_{turn:024d}"
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Reading part {turn} of the module to see how it is used."},
            {"type": "tool_use", "id": call, "name": f"Tool{turn % 20}",
             "input": {"path": f"/src/module/part_{turn}.py", "limit": 200}}]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call,
             "content": [{"type": "text", "text": f"def handler_{turn}(request):\n    return request.body\n" * 30}]}]})
    messages.append({"role": "user", "content": "Now refactor it."})
    return body


def paced_upstream() -> tuple[subprocess.Popen, int]:
    process = start([sys.executable, "-m", "tests.fake_upstream", "--chunks", str(CHUNKS), "--gap", str(GAP_S)])
    return process, int(process.stdout.readline())


def paced_routes(port: int) -> tuple[str, str, str]:
    """The provider, model and route lines that send PACED_MODEL to the paced upstream."""
    return (f'  paced-chunks: {{base_url: "http://127.0.0.1:{port}/v1", api_key_env: BENCH_KEY}}',
            "  gpt-paced-chunks: {provider: paced-chunks, upstream: gpt-bench, context_window: 400000, "
            "max_output_tokens: 128000, reasoning: true}",
            f'  - {{match: "{PACED_MODEL}", model: gpt-paced-chunks}}')


def baseline_daemon(commit: str, upstream_port: int, paced_port: int) -> tuple[subprocess.Popen, str]:
    """The baseline commit's ccproxyd (its `ccproxyd` package from `git archive`, run from its own
    directory so that it imports that copy) in front of the same upstreams."""
    work = Path(tempfile.mkdtemp(prefix=f"ccproxyd-{commit}-"))
    archive = subprocess.run(["git", "archive", commit, "ccproxyd"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work)], input=archive, check=True)
    provider, model, route = paced_routes(paced_port)
    routes = work / "routes.yaml"
    routes.write_text(f"""
providers:
  bench: {{base_url: "http://127.0.0.1:{upstream_port}/v1", api_key_env: BENCH_KEY}}
{provider}
models:
  gpt-bench: {{provider: bench, context_window: 400000, max_output_tokens: 128000, reasoning: true}}
{model}
routes:
{route}
  - {{match: "*", model: gpt-bench}}
""")
    port = free_port()
    process = pin_daemon(subprocess.Popen([sys.executable, "-m", "ccproxyd", "serve", "--routes", str(routes), "--port",
                                str(port), "--log-level", "WARNING", "--cache-dir", str(work / "cache")],
                               cwd=work, env={**os.environ, "BENCH_KEY": "bench"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/health")
    return process, url + "/v1/messages?beta=true"


def paced_cpu_per_chunk(pid: int, url: str, body: bytes) -> float:
    """Microseconds of the daemon's CPU per upstream chunk over PACED_STREAMS paced streams."""
    cpu0 = cpu_seconds(pid)
    asyncio.run(concurrent(url, body, PACED_STREAMS, {"cache-control": "no-cache"}))
    return (cpu_seconds(pid) - cpu0) / (PACED_STREAMS * CHUNKS) * 1e6


def side_by_side(up_port: int, tls_port: int, ca: Path, proxy_url: str, pid: int, paced_port: int) -> None:
    from ccproxyd.config.table import load
    from ccproxyd.translate.request import to_openai
    model = load("providers: {p: {base_url: 'http://x/v1'}}\nmodels: {gpt-bench: {provider: p, "
                 "context_window: 400000, max_output_tokens: 128000, reasoning: true}}\nroutes: "
                 "[{match: '*', model: gpt-bench}]\n").models["gpt-bench"]
    openai_body = orjson.dumps(to_openai(claude_code_like_request(), model)[0])
    plain_direct = f"http://127.0.0.1:{up_port}/v1/chat/completions"
    tls_direct = f"https://127.0.0.1:{tls_port}/v1/chat/completions"
    anthropic = orjson.dumps(claude_code_like_request())
    paced_body = orjson.dumps(dict(claude_code_like_request(), model=PACED_MODEL))
    long_body = orjson.dumps(long_conversation())
    baseline, baseline_url = baseline_daemon(BASELINE, up_port, paced_port)
    rows = [(f"{BASELINE}, plain HTTP/1.1", baseline.pid, baseline_url, anthropic, plain_direct),
            ("plain HTTP/1.1", pid, proxy_url, anthropic, plain_direct),
            (f"{BASELINE}, long conversation", baseline.pid, baseline_url, long_body, plain_direct),
            ("long conversation", pid, proxy_url, long_body, plain_direct),
            ("TLS HTTP/1.1", pid, proxy_url, orjson.dumps(dict(claude_code_like_request(), model="claude-https-h1")),
             tls_direct),
            ("TLS HTTP/2", pid, proxy_url, orjson.dumps(dict(claude_code_like_request(), model="claude-https-h2")),
             tls_direct)]
    bypass = {"cache-control": "no-cache"}
    figures: dict[str, list[tuple[float, float, float, float]]] = {label: [] for label, *_ in rows}
    paced: dict[str, list[float]] = {BASELINE: [], "today": []}
    try:
        with httpx2.Client(timeout=60, verify=ssl.create_default_context(cafile=str(ca))) as client:
            for _, _, url, body, direct in rows:
                timed(client, url, body, 50, bypass)
                timed(client, direct, openai_body, 20)
            for _ in range(ROUNDS):
                sequential = {label: ([], [], [0.0]) for label, *_ in rows}    # direct ms, through ms, CPU s
                for _ in range(BLOCKS):             # the rows take turns, so that a drift of the
                    for label, process_id, url, body, direct in rows:      # machine's speed is shared
                        direct_ms, through, cpu = sequential[label]
                        cpu0 = cpu_seconds(process_id)
                        more_direct, more_through = interleaved(client, (direct, openai_body), (url, [body], bypass),
                                                                N_SEQUENTIAL // BLOCKS)
                        cpu[0] += cpu_seconds(process_id) - cpu0
                        direct_ms += more_direct
                        through += more_through
                pooled: dict[str, list[float]] = {}     # a round's direct requests, by upstream: each row's
                for label, _, _, _, direct in rows:     # added latency is against all of them, not only its
                    pooled.setdefault(direct, []).extend(sequential[label][0])     # own 400 (less noise)
                for label, process_id, url, body, direct in rows:
                    _, through, cpu = sequential[label]
                    direct_ms = pooled[direct]
                    cpu_one = cpu[0] / len(through) * 1000
                    total = N_SEQUENTIAL * 2
                    cpu0 = cpu_seconds(process_id)
                    elapsed = asyncio.run(concurrent(url, body, total, bypass))
                    cpu_many = (cpu_seconds(process_id) - cpu0) / total * 1000
                    figures[label].append((statistics.median(through) - statistics.median(direct_ms), cpu_one,
                                           cpu_many, total / elapsed))
                for label, process_id, url in ((BASELINE, baseline.pid, baseline_url), ("today", pid, proxy_url)):
                    paced[label].append(paced_cpu_per_chunk(process_id, url, paced_body))
    finally:
        baseline.terminate()
        baseline.wait(10)
    report(rows, figures, paced)


def spread(values) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def report(rows: list, figures: dict, paced: dict) -> None:
    print(f"side by side, {ROUNDS} rounds of {N_SEQUENTIAL} requests per row (ranges over the rounds; "
          "added p50 against the round's requests of the same client straight to the same upstream, ms):")
    print(f"{'':28}{'added p50':>14}{'CPU/req':>14}{'CPU/req @16':>14}{'req/s @16':>14}")
    for label, values in figures.items():
        print(f"{label:28}" + "".join(f"{spread([v[i] for v in values]):>14}" for i in range(3))
              + f"{min(v[3] for v in values):>7.0f}–{max(v[3] for v in values):.0f}")
    base, plain = figures[rows[0][0]], figures["plain HTTP/1.1"]
    h1, h2 = figures["TLS HTTP/1.1"], figures["TLS HTTP/2"]
    long_base, long_today = figures[rows[2][0]], figures["long conversation"]
    print("per round: plain CPU / baseline CPU " + ", ".join(f"{p[1] / b[1]:.2f}" for p, b in zip(plain, base))
          + " (target <= 0.9); plain added p50 - baseline's " + ", ".join(f"{p[0] - b[0]:+.2f}" for p, b in
                                                                           zip(plain, base)) + " ms (target <= 0)")
    print("per round: TLS HTTP/2 CPU / TLS HTTP/1.1 CPU " + ", ".join(f"{a[1] / b[1]:.2f}" for a, b in zip(h2, h1))
          + " (target <= 1.2); TLS HTTP/2 added p50 " + ", ".join(f"{a[0]:.2f}" for a in h2) + " ms (target <= 1.0)")
    print(f"per round: long conversation ({TURNS} tool calls, {len(orjson.dumps(long_conversation())) // 1024} KB) "
          "CPU / baseline's " + ", ".join(f"{t[1] / b[1]:.2f}" for t, b in zip(long_today, long_base)))
    print(f"paced streams ({PACED_STREAMS} streams, 16 at a time, {CHUNKS} chunks {GAP_S * 1000:.0f} ms apart, "
          f"each chunk its own read): CPU per chunk, µs: {BASELINE} " + ", ".join(f"{v:.1f}" for v in paced[BASELINE])
          + "; today " + ", ".join(f"{v:.1f}" for v in paced["today"]) + "; today / baseline per round "
          + ", ".join(f"{t / b:.2f}" for t, b in zip(paced["today"], paced[BASELINE])), flush=True)
