"""`make run ROUTES=config/<preset>.yaml` serves the preset; CCPROXYD_ROUTES still works, and
routes.yaml stays the default.  Read from `make -n`: the commands make would run, not run."""

from __future__ import annotations

import os
import subprocess

from .conftest import ROOT


def planned(*args: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("ROUTES", "CCPROXYD_ROUTES")}
    out = subprocess.run(["make", "-n", *args], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return next(line for line in out.stdout.splitlines() if "ccproxyd " in line)


def test_make_run_serves_a_preset_given_as_routes():
    assert planned("run", "ROUTES=config/ollama.yaml").endswith("ccproxyd serve --routes config/ollama.yaml")
    assert planned("run", ROUTES="config/openrouter.yaml").endswith("serve --routes config/openrouter.yaml")
    assert planned("check", "ROUTES=config/openrouter.yaml").endswith("ccproxyd check config/openrouter.yaml")


def test_make_run_without_routes_keeps_ccproxyd_routes_and_the_default():
    command = planned("run")
    assert command.endswith("serve --routes ${CCPROXYD_ROUTES:-routes.yaml}")      # the shell picks at run time
    shell = subprocess.run(["sh", "-c", "echo " + command.split("--routes ", 1)[1]], capture_output=True, text=True,
                           env={"CCPROXYD_ROUTES": "config/xai.yaml"})
    assert shell.stdout.strip() == "config/xai.yaml"
