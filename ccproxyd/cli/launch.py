"""`ccproxyd claude`: Claude Code started against this daemon, told the window of the model its
requests are routed to.  The environment it gets is worked out here (`window_env` is pure); then
this process becomes Claude Code (exec)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys

import click
import httpx2


def launch(base: str, claude_bin: str, args: tuple[str, ...]) -> None:
    """Exec Claude Code at `base` with ARGS; exits 1 with one line when no daemon answers there or
    Claude Code cannot be found."""
    try:
        healthy = httpx2.get(base + "/health", timeout=3).status_code == 200
    except (httpx2.HTTPError, httpx2.InvalidURL, ValueError):
        healthy = False
    if not healthy:
        click.echo(f"ccproxyd: no daemon answers at {base}: start it with `make run` or `ccproxyd serve`", err=True)
        sys.exit(1)
    executable = shutil.which(claude_bin)
    if executable is None:
        click.echo(f"ccproxyd: cannot find Claude Code ({claude_bin}): install it with "
                   "`npm install -g @anthropic-ai/claude-code` or pass --claude PATH", err=True)
        sys.exit(1)
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")}
    env.update(ANTHROPIC_BASE_URL=base, ANTHROPIC_AUTH_TOKEN=os.environ.get("CCPROXYD_CLIENT_KEY") or "ccproxyd",
               CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY="1")     # /model lists the table's models
    model = _model_of(args) or os.environ.get("ANTHROPIC_MODEL") or DEFAULT_CLAUDE_MODEL
    try:
        answer = httpx2.get(f"{base}/v1/models/{model}", timeout=3,
                            headers={"x-api-key": env["ANTHROPIC_AUTH_TOKEN"]})
        routed = answer.json() if answer.status_code == 200 else None
    except (httpx2.HTTPError, ValueError):
        routed = None
    learned, note = window_env(routed, env) if isinstance(routed, dict) else ({}, None)
    env.update(learned)
    if note:
        click.echo(f"ccproxyd: {note}", err=True)
    extra: list[str] = []
    if not any(arg == "--settings" or arg.startswith("--settings=") for arg in args):
        command = shlex.join([sys.executable, "-m", "ccproxyd", "statusline", "--url", base])
        extra = ["--settings", json.dumps({"statusLine": {"type": "command", "command": command}})]
    os.execve(executable, [executable, *extra, *args], env)


# The model Claude Code 2.1.332 asks for when neither --model nor ANTHROPIC_MODEL names one (its
# bundled model catalog's `model_selector_state`: "model":"claude-opus-5-5"; seen in a `claude -p`
# run through ccproxyd on 2026-12-07).
DEFAULT_CLAUDE_MODEL = "claude-opus-5-5"
# The smallest CLAUDE_CODE_AUTO_COMPACT_WINDOW Claude Code 2.1.332 takes: below it, it warns and
# uses this ("Set it to a size of at least 100k", the binary's strings).
MIN_AUTO_COMPACT_WINDOW = 100_000


def _model_of(args: tuple[str, ...]) -> str | None:
    """The model ARGS give Claude Code (`--model X` or `--model=X`), if any."""
    for i, arg in enumerate(args):
        if arg == "--model" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--model="):
            return arg.split("=", 1)[1]
    return None


def window_env(routed: dict, env: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """What tells Claude Code the window of the model its requests are routed to (the daemon's
    /v1/models/ID answer: max_input_tokens is the routed model's context_window, max_tokens its
    max_output_tokens), and a note for the user, if any.  Claude Code 2.1.332 does not read a
    gateway's model list for windows; it reads two variables (from its strings):
    CLAUDE_CODE_MAX_CONTEXT_TOKENS, the window of a model id it does not know (an alias), and
    CLAUDE_CODE_AUTO_COMPACT_WINDOW, the window auto-compaction works to, capped by the model's
    window, at least MIN_AUTO_COMPACT_WINDOW; compaction before the window is full is armed only
    when something declares that window (this variable does).  The compaction window is the input
    that fits beside a full answer (ccproxyd refuses a prompt that does not leave the model's
    max_tokens free).  A value the user set is kept."""
    window, output = routed.get("max_input_tokens"), routed.get("max_tokens")
    if not isinstance(window, int) or not isinstance(output, int) or window <= 0:
        return {}, None
    out: dict[str, str] = {}
    if "CLAUDE_CODE_MAX_CONTEXT_TOKENS" not in env:
        out["CLAUDE_CODE_MAX_CONTEXT_TOKENS"] = str(window)
    if "CLAUDE_CODE_AUTO_COMPACT_WINDOW" in env:
        return out, None
    compact = max(window - output, window // 2)
    out["CLAUDE_CODE_AUTO_COMPACT_WINDOW"] = str(max(compact, MIN_AUTO_COMPACT_WINDOW))
    if compact >= MIN_AUTO_COMPACT_WINDOW:
        return out, None
    return out, (f"{routed.get('id')} is routed to a {window:,}-token window, under the smallest auto-compact "
                 f"window Claude Code takes ({MIN_AUTO_COMPACT_WINDOW:,}): under a Claude model's own name it "
                 f"compacts only when ccproxyd answers that the prompt is too long (an alias from /model "
                 f"compacts in time)")
