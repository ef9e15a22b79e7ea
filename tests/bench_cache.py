"""`make bench`: how much of real Claude Code sessions' input a provider's prompt cache can serve
through ccproxyd, with Claude Code's attribution line forwarded ("before", `attribution: keep`)
and consumed ("after", the default).

Real Claude Code (the newest pinned release) runs four sessions in one project directory, one
after the other, as a developer's sessions do: A (then A continued with `--continue`), B and C
with other first messages, and C's model calls the Agent tool, so a subagent runs.  ccproxyd
sits in front of a fake upstream that simulates an organisation-wide prefix cache and reports
what it served as `cached_tokens`, so ccproxyd's ledger prices it as a provider's bill would be.
Each upstream request is rendered as the system message, then the tool definitions, then the
other messages, and counted in o200k tokens; what it shares with any earlier request's prefix is
cacheable under two providers' documented rules:

- OpenAI: prompts of 1,024 tokens or more, cache hits "in increments of 128 tokens" (OpenAI's
  Prompt Caching 201 cookbook, https://raw.githubusercontent.com/openai/openai-cookbook/main/examples/Prompt_Caching_201.ipynb;
  the 1,024-token minimum: https://developers.openai.com/api/docs/guides/prompt-caching).  This
  rule's figure is what the fake reports, priced at gpt-5-mini's list prices from the bundled
  routes.yaml ($0.25 input, $0.025 cached, $2.00 output per 1M).
- DeepSeek: "The cache system uses 64 tokens as a storage unit" (https://api-docs.deepseek.com/news/news0802).
  DeepSeek's current guide (https://api-docs.deepseek.com/guides/kv_cache) describes "cache
  prefix units" persisted at request ends, at common prefixes it detects and at fixed intervals,
  without restating the 64 tokens; the 64-token rule is used here as the finer of the two.
  Priced at DeepSeek V4 Flash's list ($0.14 miss, $0.0028 hit, $0.28 output per 1M,
  https://api-docs.deepseek.com/quick_start/pricing).

The same scenario is asserted by tests/test_cache_economics.py (a correctness property, not a
timing): sessions B and C get at least 90 % of A's system-plus-tools tokens from the cache, the
whole run at least 70 %, and the subagent's first request shares the main agent's prefix up to
its first byte of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import orjson

from ccproxyd.translate.tokens import encoding

from .conftest import Daemon
from .fake_upstream import FakeUpstream, Script, chunk, text_script, tool_script, usage

ROOT = Path(__file__).resolve().parent.parent
SPAWN = "SPAWN-7Q"                          # in C's first message: the fake model calls the Agent tool
SUB_PROMPT = "Say hello from the helper agent, in one word."
SESSIONS = (("A", "Reply with the word alpha.", ()),
            ("A", "Now reply with the word beta.", ("--continue",)),
            ("B", "What is two plus two? Reply briefly.", ()),
            ("C", f"{SPAWN}: ask a helper agent to say hello, then tell me what it said.", ()))
OUTPUT_TOKENS = 20
OPENAI_PRICES = (0.25, 0.025, 2.00)         # gpt-5-mini, USD per 1M: input, cached input, output
DEEPSEEK_PRICES = (0.14, 0.0028, 0.28)      # DeepSeek V4 Flash: cache miss, cache hit, output

ROUTES = """
providers:
  sim: {{base_url: "{url}", api_key_env: MOCK_KEY}}
models:
  sim-model:
    provider: sim
    upstream: gpt-5-mini
    context_window: 400000
    max_output_tokens: 128000
    prompt_cache_key: true
    attribution: {attribution}
    prices: [{{input: 0.25, output: 2.00, cached_input: 0.025}}]
routes:
  - match: "*"
    model: sim-model
    cache: false
"""


def openai_rule(shared: int) -> int:
    """Tokens OpenAI serves from the cache for a prefix of `shared` tokens seen before."""
    return 0 if shared < 1024 else 1024 + (shared - 1024) // 128 * 128


def deepseek_rule(shared: int) -> int:
    return shared // 64 * 64


def common_prefix(a: list, b: list) -> int:
    """Length of the longest common prefix of two token lists (binary search on C-level compares)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if isinstance(part, dict))


def rendered(body: dict) -> tuple[list[int], int]:
    """The request's tokens in cache order (system, tools, other messages), and how many of them
    are the system message and tools."""
    enc = encoding()
    messages = body.get("messages") or []
    system = _text(messages[0]["content"]) if messages and messages[0]["role"] == "system" else ""
    rest = messages[1:] if system else messages
    head = system + "\n" + orjson.dumps(body.get("tools") or []).decode()
    tail = "".join("\n" + m["role"] + ":" + orjson.dumps({k: v for k, v in m.items() if k != "role"}).decode()
                   for m in rest)
    head_tokens = enc.encode(head, disallowed_special=())
    return head_tokens + enc.encode(tail, disallowed_special=()), len(head_tokens)


@dataclass
class Seen:
    session: str
    kind: str                    # main, subagent, side
    tokens: int
    head: int                    # system + tools tokens
    cached_openai: int
    cached_deepseek: int
    system: str
    body: dict = field(repr=False)


class PrefixCacheUpstream(FakeUpstream):
    """The fake upstream with an org-wide prefix cache: answers as Claude Code's turns need and
    reports the OpenAI rule's cached tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.session = "?"
        self.seen: list[Seen] = []
        self.prefixes: list[list[int]] = []
        self.responder = self.answer

    def forget(self) -> None:
        self.seen, self.prefixes = [], []

    def answer(self, body: dict) -> Script:
        tokens, head = rendered(body)
        shared = max((common_prefix(tokens, p) for p in self.prefixes), default=0)
        self.prefixes.append(tokens)
        dumped = orjson.dumps(body.get("messages") or []).decode()
        kind = "subagent" if SUB_PROMPT in dumped and SPAWN not in dumped else \
            "main" if any(t["function"]["name"] == "Agent" for t in body.get("tools") or ()) else "side"
        system = _text(body["messages"][0]["content"]) if body["messages"][0]["role"] == "system" else ""
        cached = min(openai_rule(shared), len(tokens))
        self.seen.append(Seen(self.session, kind, len(tokens), head, cached, min(deepseek_rule(shared), len(tokens)),
                              system, body))
        use = usage(len(tokens), OUTPUT_TOKENS, cached=cached)
        if any(m["role"] == "tool" for m in body["messages"]):
            return text_script("The helper said hello.", use=use)
        if kind == "main" and SPAWN in dumped:
            args = json.dumps({"description": "say hello", "prompt": SUB_PROMPT, "subagent_type": "general-purpose",
                               "run_in_background": False})
            script = tool_script("Agent", args, call_id="call_agent_1")
            script.events[-1] = chunk(choices=False, usage=use)
            return script
        return text_script("hello" if kind == "subagent" else "ok", use=use)


def claude_binary() -> Path:
    from .support import NEWEST, claude_binary as binary
    return binary(NEWEST)


def run_sessions(claude: Path, fake: PrefixCacheUpstream, daemon: Daemon, work: Path, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
    env.update(ANTHROPIC_BASE_URL=daemon.url, ANTHROPIC_API_KEY="sk-ant-client-key",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", HOME=str(home), DISABLE_AUTOUPDATER="1")
    for session, prompt, extra in SESSIONS:
        fake.session = session
        result = subprocess.run([str(claude), "-p", prompt, "--output-format", "json", "--permission-mode",
                                 "acceptEdits", "--allowedTools", "Agent", *extra],
                                cwd=work, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError(f"Claude Code failed: {result.stdout[-1500:]}\n{result.stderr[-1500:]}")


def scenario(fake: PrefixCacheUpstream, attribution: str, base: Path) -> dict:
    """Run the four sessions through a daemon with `attribution: keep|strip`; the figures."""
    fake.forget()
    base.mkdir(parents=True, exist_ok=True)
    work, home = base / "work", base / "home"
    work.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    routes = base / "routes.yaml"
    routes.write_text(ROUTES.format(url=fake.url, attribution=attribution))
    daemon = Daemon(routes, extra_args=("--no-cache", "--log-bodies", "--ledger-dir", str(base / "ledger")),
                    log_path=base / "daemon.log")
    try:
        run_sessions(claude_binary(), fake, daemon, work, home)
        spend = httpx2.get(daemon.url + "/spend", params={"by": "session"}, timeout=10).json()
        versions = httpx2.get(daemon.url + "/spend", params={"by": "version"}, timeout=10).json()
    finally:
        daemon.stop()
    return figures(list(fake.seen), spend, versions, (base / "daemon.log").read_text())


def _dollars(seen: list[Seen], cached_of, prices: tuple[float, float, float]) -> float:
    miss, hit, out = prices
    return sum((s.tokens - cached_of(s)) * miss + cached_of(s) * hit + OUTPUT_TOKENS * out for s in seen) / 1e6


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def figures(seen: list[Seen], spend: dict, versions: dict, log: str) -> dict:
    first = {}
    for s in seen:
        if s.kind in ("main", "subagent"):
            first.setdefault((s.session, s.kind), s)
    a_head = first[("A", "main")].head
    sessions = {}
    for label in ("A", "B", "C"):
        mine = [s for s in seen if s.session == label and s.kind != "subagent"]
        sessions[label] = _session(mine)
    sessions["C subagent"] = _session([s for s in seen if s.kind == "subagent"])
    total = _session(seen)
    # the scenario: the main agents of A (two turns), B and C, without the subagent
    mains = _session([s for s in seen if s.kind == "main"])
    main, sub = first[("C", "main")], first.get(("C", "subagent"))
    return {
        "requests": len(seen),
        "a_head_tokens": a_head,
        # the share of A's system + tools that a later session's first request gets from the cache
        "first_request_share_of_a_head": {label: round(min(first[(label, "main")].cached_openai, a_head) / a_head, 4)
                                          for label in ("B", "C")},
        "first_request_share_of_a_head_deepseek": {
            label: round(min(first[(label, "main")].cached_deepseek, a_head) / a_head, 4) for label in ("B", "C")},
        "sessions": sessions,
        "total": total,
        "main_agents": mains,
        "subagent_first_difference": first_difference(main.system, sub.system) if sub else None,
        "subagent_system_head": sub.system[:120] if sub else None,
        "main_system_head": main.system[:120],
        "attribution_upstream": any("x-anthropic-billing-header" in json.dumps(s.body) for s in seen),
        "ledger_sessions": {row["key"]: {k: row[k] for k in ("requests", "input_tokens", "cached_input_tokens",
                                                               "cached_share", "cost_usd", "miss_cost_usd")}
                            for row in spend["rows"]},
        "ledger_versions": {row["key"]: row["requests"] for row in versions["rows"]},
        "access": [(line["cc_version"], line["cc_entrypoint"])           # the access lines' attribution
                   for line in (json.loads(text.split("ccproxyd.access: ", 1)[1]) for text in log.splitlines()
                                if "ccproxyd.access: {" in text)],
        "first_upstream": {f"{session} {kind}": s.body for (session, kind), s in first.items()},
        "bodies": [json.loads(line.split("ccproxyd.bodies: ", 1)[1].split(" ", 1)[1])   # what Claude Code sent
                   for line in log.splitlines() if "ccproxyd.bodies: " in line],
    }


def _session(seen: list[Seen]) -> dict:
    tokens = sum(s.tokens for s in seen)
    return {"requests": len(seen), "input_tokens": tokens,
            "cached_openai": sum(s.cached_openai for s in seen),
            "cached_share_openai": round(sum(s.cached_openai for s in seen) / tokens, 4) if tokens else None,
            "usd_openai": round(_dollars(seen, lambda s: s.cached_openai, OPENAI_PRICES), 6),
            "cached_deepseek": sum(s.cached_deepseek for s in seen),
            "cached_share_deepseek": round(sum(s.cached_deepseek for s in seen) / tokens, 4) if tokens else None,
            "usd_deepseek": round(_dollars(seen, lambda s: s.cached_deepseek, DEEPSEEK_PRICES), 6)}


def report(label: str, result: dict) -> None:
    print(f"\n{label}: {result['requests']} upstream requests; A's system + tools: {result['a_head_tokens']:,} tokens")
    print(f"  first request's cached share of A's system + tools (OpenAI rule): "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in result["first_request_share_of_a_head"].items())
          + "; DeepSeek rule: "
          + ", ".join(f"{k} {100 * v:.1f} %" for k, v in result["first_request_share_of_a_head_deepseek"].items()))
    print(f"  {'session':<12} {'requests':>8} {'input':>8} {'cached OpenAI':>14} {'$ OpenAI':>10} "
          f"{'cached DeepSeek':>16} {'$ DeepSeek':>11}")
    for name, s in [*result["sessions"].items(), ("main agents", result["main_agents"]), ("whole run", result["total"])]:
        if not s["requests"]:
            continue
        print(f"  {name:<12} {s['requests']:>8} {s['input_tokens']:>8,} {100 * s['cached_share_openai']:>13.1f}% "
              f"{s['usd_openai']:>10.5f} {100 * s['cached_share_deepseek']:>15.1f}% {s['usd_deepseek']:>11.5f}")
    print(f"  subagent vs main agent: upstream system prompts first differ at character "
          f"{result['subagent_first_difference']}; the attribution line reached the upstream: "
          f"{result['attribution_upstream']}")


def main() -> None:
    fake = PrefixCacheUpstream().start()
    base = Path(tempfile.mkdtemp(prefix="ccproxyd-bench-cache-"))
    try:
        before = scenario(fake, "keep", base / "keep")
        after = scenario(fake, "strip", base / "strip")
    finally:
        fake.stop()
        shutil.rmtree(base, ignore_errors=True)
    print("cache economics: real Claude Code sessions against a simulated provider prefix cache")
    report("before (attribution: keep, the line forwarded)", before)
    report("after (attribution: strip, the default)", after)
    for label, result in (("before", before), ("after", after)):
        print(f"  ledger ({label}), by session: " + json.dumps(result["ledger_sessions"]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
