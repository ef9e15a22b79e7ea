"""`make bench`: the latency and CPU ccproxyd adds to a Claude-Code-sized streamed request.

A raw-asyncio fake upstream (its own process) streams 40 chunks with no delay; ccproxyd (one
worker, its own process) sits in front of it.  A second fake serves the same answer over TLS
(HTTP/2 or HTTP/1.1 by ALPN) for the https rows: one provider with `http2: true`, one with
`http2: false`, both trusting the fake's CA through `ca_file`.  The same client measures the upstream directly and
through ccproxyd, so the difference is what the proxy adds.  CPU is the ccproxyd process's own
(cpu_seconds: all its threads).

The side-by-side table (the baseline commit against today, in one run) is tests/bench_compare.py;
`BENCH_ONLY=compare` runs only that table (for development).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import orjson

ROOT = Path(__file__).resolve().parent.parent
N_SEQUENTIAL = int(os.environ.get("BENCH_N", "400"))
N_CONCURRENT = 16
N_SLOW = int(os.environ.get("BENCH_SLOW", "1000"))
TTFT_S, GAP_S = 0.02, 0.005
TICKS = os.sysconf("SC_CLK_TCK")
BASELINE = os.environ.get("BENCH_BASELINE", "d0c39f5")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))


def claude_code_like_request() -> dict:
    tools = [{"name": f"Tool{i}", "description": f"Tool number {i}. " + "Does useful things with files. " * 6,
              "input_schema": {"type": "object", "$schema": "http://json-schema.org/draft-07/schema#",
                               "properties": {"path": {"type": "string", "description": "absolute path"},
                                              "limit": {"type": "integer"}, "flag": {"type": "boolean"}},
                               "required": ["path"], "additionalProperties": False}} for i in range(20)]
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
              {"type": "text", "text": "You are Claude Code. " + "Follow the instructions carefully. " * 110,
               "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "user", "content": [{"type": "text", "text": "<system-reminder>context</system-reminder>"},
                                             {"type": "text", "text": "Please refactor the module. " * 20}]}]
    body = {"model": "claude-sonnet-4-5", "max_tokens": 32000, "stream": True, "system": system,
            "messages": messages, "tools": tools, "metadata": {"user_id": "user_" + "a" * 64},
            "thinking": {"type": "adaptive"}}
    return body


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads: its Linux CPU-time clock (nanoseconds, clockid
    MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)), else /proc's user and system ticks (10 ms apart:
    2 to 4 % of a row's CPU at 400 requests)."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


# With two CPUs or more (and BENCH_PIN not 0), every ccproxyd daemon runs on the last CPU and the
# bench (clients, fake upstreams) on the others, so that a daemon's CPU time is not its
# neighbours' cache and scheduling noise: the side-by-side ratios spread less.
CPUS = sorted(os.sched_getaffinity(0))
PIN = len(CPUS) >= 2 and os.environ.get("BENCH_PIN", "1") != "0"


def pin_bench() -> None:
    if PIN:
        os.sched_setaffinity(0, CPUS[:-1])


def pin_daemon(process: subprocess.Popen) -> subprocess.Popen:
    if PIN:
        os.sched_setaffinity(process.pid, CPUS[-1:])
    return process


def wait_ready(url: str) -> None:
    for _ in range(300):
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def interleaved(client: httpx2.Client, direct: tuple[str, bytes], through: tuple[str, list[bytes], dict],
                n: int) -> tuple[list[float], list[float]]:
    """Alternate direct and proxied requests so both sides see the same machine noise.
    `through` cycles through its bodies (distinct bodies make cache misses)."""
    url, bodies, headers = through
    direct_ms: list[float] = []
    through_ms: list[float] = []
    for i in range(n):
        direct_ms += timed(client, *direct, 1)
        through_ms += timed(client, url, bodies[i % len(bodies)], 1, headers)
    return direct_ms, through_ms


FIRST_TOKEN = (b'"content":"word0', b'"text":"word0')    # the first text fragment, OpenAI and Anthropic form
FIRST_MS: dict[str, list[float]] = {}                     # url -> milliseconds to FIRST_TOKEN, per request


def timed(client: httpx2.Client, url: str, body: bytes, n: int, headers: dict | None = None) -> list[float]:
    """Milliseconds per whole streamed answer; also notes the time to its first text fragment."""
    out = []
    headers = {"content-type": "application/json", **(headers or {})}
    for _ in range(n):
        first = None
        seen = b""
        t0 = time.perf_counter()
        with client.stream("POST", url, content=body, headers=headers) as r:
            for piece in r.iter_raw():
                if first is None:
                    seen += piece
                    if any(marker in seen for marker in FIRST_TOKEN):
                        first = (time.perf_counter() - t0) * 1000
            assert r.status_code == 200, r.status_code
        out.append((time.perf_counter() - t0) * 1000)
        if first is not None:
            FIRST_MS.setdefault(url, []).append(first)
    return out


def distinct_bodies(n: int) -> list[bytes]:
    bodies = []
    for i in range(n):
        body = claude_code_like_request()
        body["messages"][0]["content"][1]["text"] += f" (request {i})"
        bodies.append(orjson.dumps(body))
    return bodies


async def concurrent(url: str, body: bytes, total: int, headers: dict) -> float:
    async with httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=N_CONCURRENT)) as client:
        queue = list(range(total))

        async def worker() -> None:
            while queue:
                queue.pop()
                async with client.stream("POST", url, content=body,
                                         headers={"content-type": "application/json", **headers}) as r:
                    async for _ in r.aiter_raw():
                        pass
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(N_CONCURRENT)))
        return time.perf_counter() - t0


async def slow_streams(url: str, body: bytes, n: int, pid: int) -> tuple[int, int, float, float]:
    """n concurrent streams over raw sockets; returns (complete streams, text pieces, peak RSS MB, seconds)."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    path = "/" + url.split("//")[1].split("/", 1)[1]
    request = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
               f"cache-control: no-cache\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body
    peak = 0.0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.1)

    async def one() -> tuple[bool, int]:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        data = await reader.read()
        writer.close()
        # the fake's 40 pieces ("word0 " ...), however many deltas carried them (one read's are joined)
        return data.count(b"event: message_stop") == 1, data.count(b"word")

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - t0
    done.set()
    await sampler
    return sum(ok for ok, _ in results), sum(frames for _, frames in results), peak, elapsed


def otel_cpu(routes: Path, body: bytes, n: int) -> tuple[float, float]:
    """ccproxyd's CPU per streamed request (cache bypassed) without OpenTelemetry and with it on,
    exporting spans and metrics to a local OTLP/HTTP sink: two fresh daemons, same flags, the
    requests alternating between them so both see the same machine noise."""
    sink = start([sys.executable, "-m", "tests.otlp_receiver"])
    endpoint = f"http://127.0.0.1:{int(sink.stdout.readline())}"
    plain = {k: "" for k in os.environ if k.startswith("OTEL_")}
    daemons = {}
    for label, env in (("off", plain), ("on", dict(plain, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))):
        port = free_port()
        daemons[label] = (pin_daemon(start([sys.executable, "-m", "ccproxyd", "serve", "--routes", str(routes), "--port", str(port),
                                            "--log-level", "WARNING", "--no-cache"], env={"BENCH_KEY": "bench", **env})),
                          f"http://127.0.0.1:{port}")
    try:
        bypass = {"cache-control": "no-cache"}
        with httpx2.Client(timeout=60) as client:
            for process, url in daemons.values():
                wait_ready(url + "/health")
                timed(client, url + "/v1/messages", body, 50, bypass)                # warm-up
            before = {label: cpu_seconds(process.pid) for label, (process, _) in daemons.items()}
            for _ in range(n):
                for _, url in daemons.values():
                    timed(client, url + "/v1/messages", body, 1, bypass)
            return tuple((cpu_seconds(process.pid) - before[label]) / n * 1000
                         for label, (process, _) in daemons.items())
    finally:
        for process, _ in daemons.values():
            process.terminate()
            process.wait(10)
        sink.terminate()
        sink.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_row(direct_label: str, label: str, direct: list[float], through: list[float], cpu_ms: float) -> None:
    d50, d99 = statistics.median(direct), pct(direct, 0.99)
    p50, p99 = statistics.median(through), pct(through, 0.99)
    print(f"{direct_label:36}{d50:9.2f}{d99:9.2f}")
    print(f"{'via ccproxyd, ' + label:36}{p50:9.2f}{p99:9.2f}{p50 - d50:9.2f}{p99 - d99:11.2f}{cpu_ms:9.2f}")


STATUSLINE_RUNS = int(os.environ.get("BENCH_STATUSLINE", "40"))


def statusline_ms(port: int, session: str, n: int) -> tuple[list[float], str]:
    """Wall milliseconds of `ccproxyd statusline` as Claude Code runs it after each message: a new
    process, its status JSON on stdin, one line out."""
    payload = json.dumps({"session_id": session, "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp",
                          "model": {"id": "claude-sonnet-4-5", "display_name": "Sonnet 4.5"},
                          "workspace": {"current_dir": "/tmp", "project_dir": "/tmp", "added_dirs": []},
                          "cost": {"total_cost_usd": 0.1, "total_duration_ms": 1000}})
    env = {**os.environ, "CCPROXYD_PORT": str(port)}
    out, line = [], ""
    for _ in range(n):
        t0 = time.perf_counter()
        line = subprocess.run([sys.executable, "-m", "ccproxyd", "statusline"], input=payload, capture_output=True,
                              text=True, env=env, cwd=ROOT, check=True).stdout.strip()
        out.append((time.perf_counter() - t0) * 1000)
    return out, line


def python_start_ms(n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def print_statusline(port: int, client: httpx2.Client, body: bytes, proxy_url: str) -> None:
    session = f"bench-{os.getpid()}"
    timed(client, proxy_url, body, 20, {"cache-control": "no-cache", "x-claude-code-session-id": session})
    rows = client.get(f"http://127.0.0.1:{port}/spend?by=day").json()["total"]["requests"]
    up, line = statusline_ms(port, session, STATUSLINE_RUNS)
    down, down_line = statusline_ms(1, session, STATUSLINE_RUNS // 2)
    floor = python_start_ms(STATUSLINE_RUNS // 2)
    print(f"ccproxyd statusline ({STATUSLINE_RUNS} runs, a new process each, ledger of {rows} requests; "
          f"ms): p50 {statistics.median(up):.1f}, p95 {pct(up, 0.95):.1f}, max {max(up):.1f}; daemon down: "
          f"p50 {statistics.median(down):.1f}, p95 {pct(down, 0.95):.1f}; bare `python -c pass`: "
          f"p50 {statistics.median(floor):.1f}")
    print(f"  it printed: {line!r}; with the daemon down: {down_line!r}")


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    from .bench_compare import paced_routes, paced_upstream, side_by_side
    pin_bench()
    upstream = start([sys.executable, "-m", "tests.fake_upstream", "--chunks", "40"])
    up_port = int(upstream.stdout.readline())
    # for time to first token: the answer starts after TTFT_S, then a chunk every GAP_S
    paced = start([sys.executable, "-m", "tests.fake_upstream", "--chunks", "5", "--ttft", str(TTFT_S),
                   "--gap", str(GAP_S)])
    paced_port = int(paced.stdout.readline())
    work = Path(tempfile.mkdtemp())
    tls = start([sys.executable, "-m", "tests.fake_upstream", "--chunks", "40", "--tls", str(work)])
    tls_port = int(tls.stdout.readline())
    chunks, chunks_port = paced_upstream()
    paced_provider, paced_model, paced_route = paced_routes(chunks_port)
    ca = work / "ca.pem"
    routes = work / "routes.yaml"
    routes.write_text(f"""
providers:
  bench: {{base_url: "http://127.0.0.1:{up_port}/v1", api_key_env: BENCH_KEY}}
  paced: {{base_url: "http://127.0.0.1:{paced_port}/v1", api_key_env: BENCH_KEY}}
  tls-h2: {{base_url: "https://127.0.0.1:{tls_port}/v1", api_key_env: BENCH_KEY, ca_file: "{ca}", http2: true}}
  tls-h1: {{base_url: "https://127.0.0.1:{tls_port}/v1", api_key_env: BENCH_KEY, ca_file: "{ca}", http2: false}}
{paced_provider}
models:
  gpt-bench: {{provider: bench, context_window: 400000, max_output_tokens: 128000, reasoning: true}}
  gpt-paced: {{provider: paced, context_window: 400000, max_output_tokens: 128000, reasoning: true}}
  gpt-tls-h2: {{provider: tls-h2, upstream: gpt-bench, context_window: 400000, max_output_tokens: 128000, reasoning: true}}
  gpt-tls-h1: {{provider: tls-h1, upstream: gpt-bench, context_window: 400000, max_output_tokens: 128000, reasoning: true}}
{paced_model}
routes:
  - {{match: "claude-paced", model: gpt-paced}}
  - {{match: "claude-https-h2", model: gpt-tls-h2}}
  - {{match: "claude-https-h1", model: gpt-tls-h1}}
{paced_route}
  - {{match: "*", model: gpt-bench}}
""")
    port = 18000 + os.getpid() % 1000
    proxy = pin_daemon(start([sys.executable, "-m", "ccproxyd", "serve", "--routes", str(routes), "--port", str(port),
                   "--log-level", "WARNING", "--cache-dir", str(routes.parent / "cache"),
                   "--ledger-dir", str(routes.parent / "ledger")], env={"BENCH_KEY": "bench"}))
    try:
        wait_ready(f"http://127.0.0.1:{port}/health")
        if os.environ.get("BENCH_ONLY") == "compare":
            side_by_side(up_port, tls_port, ca, f"http://127.0.0.1:{port}/v1/messages?beta=true", proxy.pid,
                         chunks_port)
            return
        anthropic_body = orjson.dumps(claude_code_like_request())
        from ccproxyd.config.table import load
        from ccproxyd.translate.request import to_openai
        model = load(routes.read_text(), env={"BENCH_KEY": "x"}).models["gpt-bench"]
        openai_body = orjson.dumps(to_openai(claude_code_like_request(), model)[0])
        direct_url = f"http://127.0.0.1:{up_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{port}/v1/messages?beta=true"
        print(f"request: {len(anthropic_body)} bytes Anthropic, {len(openai_body)} bytes upstream, "
              f"20 tools, 40 chunks; one client, {N_SEQUENTIAL} requests per row, interleaved with direct ones; "
              f"CPU in ms of the ccproxyd process", flush=True)
        bypass = {"cache-control": "no-cache"}
        rows = []
        cpu = {}
        with httpx2.Client(timeout=60) as client:
            timed(client, direct_url, openai_body, 50)                    # warm-up
            timed(client, proxy_url, anthropic_body, 50, bypass)
            for label, bodies, headers in (
                    ("cache bypassed (no-cache)", [anthropic_body], bypass),
                    ("cache miss (default config)", distinct_bodies(N_SEQUENTIAL), {}),
                    ("cache hit", [anthropic_body], {})):
                cpu0 = cpu_seconds(proxy.pid)                              # idle during direct requests
                direct, through = interleaved(client, (direct_url, openai_body), (proxy_url, bodies, headers),
                                              N_SEQUENTIAL)
                cpu[label] = (cpu_seconds(proxy.pid) - cpu0) / N_SEQUENTIAL * 1000
                rows.append((label, direct, through))
            paced_direct = f"http://127.0.0.1:{paced_port}/v1/chat/completions"
            paced_body = orjson.dumps(dict(claude_code_like_request(), model="claude-paced"))
            for _ in range(min(N_SEQUENTIAL, 200)):
                timed(client, paced_direct, openai_body, 1)
                timed(client, proxy_url, paced_body, 1, bypass)
                ttft_direct, ttft_proxy = FIRST_MS[paced_direct], FIRST_MS[proxy_url][-min(N_SEQUENTIAL, 200):]
        total = N_SEQUENTIAL * 2
        ceiling = N_SEQUENTIAL * 2 / asyncio.run(concurrent(direct_url, openai_body, N_SEQUENTIAL * 2, {}))
        cpu0 = cpu_seconds(proxy.pid)
        elapsed = asyncio.run(concurrent(proxy_url, anthropic_body, total, bypass))
        cpu_many = (cpu_seconds(proxy.pid) - cpu0) / total * 1000
        print(f"{'':36}{'median':>9}{'p99':>9}{'added':>9}{'added p99':>11}{'CPU/req':>9}")
        for label, direct, through in rows:
            print_row("upstream directly (ms)", label, direct, through, cpu[label])
        print(f"ccproxyd CPU per streamed request, {N_CONCURRENT} clients (cache bypassed): {cpu_many:.2f} ms")
        print(f"time to first token (upstream: first chunk after {TTFT_S * 1000:.0f} ms, then one every "
              f"{GAP_S * 1000:.0f} ms; median ms): upstream directly {statistics.median(ttft_direct):.2f}, "
              f"via ccproxyd {statistics.median(ttft_proxy):.2f}, "
              f"added {statistics.median(ttft_proxy) - statistics.median(ttft_direct):.2f}")
        print(f"throughput at {N_CONCURRENT} clients: {total / elapsed:.0f} requests/s via ccproxyd, "
              f"{ceiling:.0f} requests/s against the fake upstream directly (the upstream's and the "
              f"load generator's own ceiling; the generator is Python httpx2 in one process)")
        print(f"ccproxyd RSS after the run: {rss_mb(proxy.pid):.0f} MB")
        side_by_side(up_port, tls_port, ca, proxy_url, proxy.pid, chunks_port)
        off, on = otel_cpu(routes, anthropic_body, N_SEQUENTIAL)
        print(f"OpenTelemetry: ccproxyd CPU per streamed request (cache bypassed), export off {off:.2f} ms, "
              f"on {on:.2f} ms (spans and metrics to a local OTLP/HTTP sink), added {on - off:.2f} ms")
        with httpx2.Client(timeout=60) as client:
            print_statusline(port, client, anthropic_body, proxy_url)
        slow_dir = Path(tempfile.mkdtemp())
        current = f'"http://127.0.0.1:{up_port}/v1", api_key_env: BENCH_KEY'
        for label, args, provider in (
                ("", [], lambda port: f'"http://127.0.0.1:{port}/v1", api_key_env: BENCH_KEY'),
                (" over https (HTTP/2)", ["--tls", str(slow_dir)],
                 lambda port: f'"https://127.0.0.1:{port}/v1", api_key_env: BENCH_KEY, ca_file: "{slow_dir}/ca.pem", '
                              'http2: true')):
            slow = start([sys.executable, "-m", "tests.fake_upstream", "--chunks", "40", "--gap", "0.05", *args])
            slow_port = int(slow.stdout.readline())
            routes.write_text(routes.read_text().replace(current, provider(slow_port)))
            current = provider(slow_port)
            time.sleep(1.0)                                          # the live reload picks it up
            try:
                complete, frames, peak, seconds = asyncio.run(slow_streams(proxy_url, anthropic_body, N_SLOW,
                                                                           proxy.pid))
            finally:
                slow.terminate()
            print(f"{N_SLOW} concurrent slow streams{label} (a chunk every 50 ms, 40 chunks): {complete}/{N_SLOW} "
                  f"complete, {frames}/{N_SLOW * 40} text pieces arrived, peak RSS {peak:.0f} MB, {seconds:.1f} s")
    finally:
        for process in (proxy, upstream, paced, tls, chunks):
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
