"""`make bench`, team part (runs when redis-server is installed): what `--redis` adds to a
Claude-Code-sized streamed request, and fleet throughput behind a loopback HAProxy.

Two daemons in front of one fake upstream, identical but for `--redis` (both with the disk
cache, the default); the same client alternates between them, so the difference is what Redis
adds.  Rows: cache bypassed (no-cache: Redis is not asked), cache miss (distinct requests: one
Lua lookup, the answer mirrored into a stream and stored in Redis), and a hit: from the daemon's
own disk without Redis, versus an answer a third daemon stored, served from Redis.  Then 1, 2 and 3 daemons behind HAProxy
(config/haproxy.cfg), 16 clients, cache bypassed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from .bench import (N_CONCURRENT, ROOT, claude_code_like_request, concurrent, cpu_seconds, distinct_bodies, pct, start,
                    timed, wait_ready)
from .conftest import free_port

N = int(os.environ.get("BENCH_N", "400"))


def daemon(routes: Path, port: int, *args: str) -> subprocess.Popen:
    proc = start([sys.executable, "-m", "ccproxyd", "serve", "--routes", str(routes), "--port", str(port),
                  "--log-level", "WARNING", *args], env={"BENCH_KEY": "bench"})
    wait_ready(f"http://127.0.0.1:{port}/health")
    return proc


def main() -> None:
    if shutil.which("redis-server") is None:
        print("team bench skipped: redis-server is not installed")
        return
    import orjson
    work = Path(tempfile.mkdtemp())
    upstream = start([sys.executable, "-m", "tests.fake_upstream", "--chunks", "40"])
    up_port = int(upstream.stdout.readline())
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    routes = work / "routes.yaml"
    routes.write_text(f"""
providers:
  bench: {{base_url: "http://127.0.0.1:{up_port}/v1", api_key_env: BENCH_KEY}}
models:
  gpt-bench: {{provider: bench, context_window: 400000, max_output_tokens: 128000, reasoning: true}}
routes:
  - {{match: "*", model: gpt-bench}}
""")
    url = f"redis://127.0.0.1:{redis_port}/0"
    ports = [free_port() for _ in range(3)]
    procs = [upstream, redis]
    try:
        procs.append(daemon(routes, ports[0], "--cache-dir", str(work / "off")))
        procs.append(daemon(routes, ports[1], "--cache-dir", str(work / "on"), "--redis", url))
        procs.append(daemon(routes, ports[2], "--cache-dir", str(work / "on2"), "--redis", url))
        off, on, on2 = (f"http://127.0.0.1:{p}/v1/messages?beta=true" for p in ports)
        body = orjson.dumps(claude_code_like_request())
        bypass = {"cache-control": "no-cache"}
        print(f"team mode: Redis on versus off, one daemon each, {N} streamed requests per row, alternating (ms)")
        print(f"{'':34}{'off':>9}{'on':>9}{'added':>9}{'off p99':>9}{'on p99':>9}{'CPU off':>9}{'CPU on':>9}")
        pids = (procs[2].pid, procs[3].pid)
        import httpx2
        with httpx2.Client(timeout=60) as client:
            timed(client, off, body, 30, bypass)
            timed(client, on, body, 30, bypass)
            misses = distinct_bodies(N)
            for label, bodies, headers in (("cache bypassed (no-cache)", [body], bypass),
                                           ("cache miss (distinct requests)", misses, {})):
                off_ms, on_ms = [], []
                cpu0 = [cpu_seconds(pid) for pid in pids]
                for i in range(N):
                    off_ms += timed(client, off, bodies[i % len(bodies)] if headers else misses_off(i), 1, headers)
                    on_ms += timed(client, on, bodies[i % len(bodies)], 1, headers)
                row(label, off_ms, on_ms, [(cpu_seconds(pid) - c) / N * 1000 for pid, c in zip(pids, cpu0)])
            hit_disk, hit_redis = [], []
            cpu0 = [cpu_seconds(pid) for pid in pids]
            for i, stored in enumerate(distinct_bodies(N)):
                stored = stored.replace(b"(request ", b"(hit request ")
                timed(client, off, stored, 1)                             # now on off's disk
                timed(client, on2, stored, 1)                             # now in Redis (and on2's disk)
                hit_disk += timed(client, off, stored, 1)
                hit_redis += timed(client, on, stored, 1)                 # not on on's disk: from Redis
            row("hit: own disk / another's, via Redis", hit_disk, hit_redis,
                [(cpu_seconds(pid) - c) / N * 1000 for pid, c in zip(pids, cpu0)])
        fleet(work, ports)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


MISSES_OFF: list[bytes] = []


def misses_off(i: int) -> bytes:
    """Distinct requests for the daemon without Redis (its own, so neither daemon's cache helps)."""
    if not MISSES_OFF:
        MISSES_OFF.extend(distinct_bodies(N))
        for n, body in enumerate(MISSES_OFF):
            MISSES_OFF[n] = body.replace(b"(request ", b"(off request ")
    return MISSES_OFF[i]


def row(label: str, off: list[float], on: list[float], cpu: list[float]) -> None:
    """Medians, p99s and each daemon's CPU ms per request of the row (the hit row's "off" CPU
    includes the miss that stored each answer)."""
    print(f"{label:34}{median(off):9.2f}{median(on):9.2f}{median(on) - median(off):9.2f}"
          f"{pct(off, 0.99):9.2f}{pct(on, 0.99):9.2f}{cpu[0]:9.2f}{cpu[1]:9.2f}", flush=True)


def fleet(work: Path, ports: list[int]) -> None:
    if shutil.which("haproxy") is None:
        print("fleet throughput skipped: haproxy is not installed")
        return
    import orjson
    body = orjson.dumps(claude_code_like_request())
    print(f"fleet behind HAProxy (config/haproxy.cfg), {N_CONCURRENT} clients, cache bypassed, "
          f"{os.cpu_count()} cores on this machine:")
    for n in (1, 2, 3):
        port = free_port()
        text = (ROOT / "config" / "haproxy.cfg").read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        lines = [line for line in text.splitlines() if not line.strip().startswith("server ")]
        lines += [f"    server d{i} 127.0.0.1:{p}" for i, p in enumerate(ports[:n])]
        config = work / f"haproxy-{n}.cfg"
        config.write_text("\n".join(lines) + "\n")
        proxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"http://127.0.0.1:{port}/health")
            time.sleep(0.5)
            total = N * 2
            elapsed = asyncio.run(concurrent(f"http://127.0.0.1:{port}/v1/messages?beta=true", body, total,
                                             {"cache-control": "no-cache"}))
            print(f"  {n} daemon(s): {total / elapsed:.0f} requests/s", flush=True)
        finally:
            proxy.terminate()
            proxy.wait(5)


if __name__ == "__main__":
    main()
