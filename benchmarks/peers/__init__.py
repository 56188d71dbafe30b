"""Peers measured in the same run: `peers.py` is a verbatim copy of the project's shared peer
benchmark (timm / torchvision), run in a subprocess by `run_peers`, or run beforehand in the
same call with its output in `$PEERS_JSON` (what `benchmarks/gpu.sh` does, so that torch and
JAX never hold the accelerator at the same time)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from nsjax import _malloc

PEERS = os.path.join(os.path.dirname(__file__), "peers.py")


def peer_python() -> str | None:
    """A Python that has torch and timm: `$PEERS_PYTHON`, else this one if it has them."""
    if os.environ.get("PEERS_PYTHON"):
        return os.environ["PEERS_PYTHON"]
    if importlib.util.find_spec("torch") and importlib.util.find_spec("timm"):
        return sys.executable
    return None


def run_peers(which: str, **env: str | int) -> list[dict]:
    """Run sections `which` of peers.py; returns its JSON lines ([] when no peer Python).
    With `$PEERS_JSON` set, reads the lines of an earlier run from that file instead."""
    if os.environ.get("PEERS_JSON"):
        with open(os.environ["PEERS_JSON"]) as fh:
            return [json.loads(line) for line in fh if line.startswith("{")]
    return run_script(PEERS, WHICH=which, **env)


def run_script(path: str, **env: str | int) -> list[dict]:
    """Run the peer script `path` with the peer Python and `env` added to the environment (as
    it was before `nsjax._malloc.reexec`: the peers keep glibc's defaults); returns its JSON
    lines ([] when no peer Python)."""
    python = peer_python()
    if python is None:
        print("[peers] no Python with torch+timm (set PEERS_PYTHON): peers skipped", file=sys.stderr)
        return []
    full_env = {**_malloc.original_environ(os.environ), **{k: str(v) for k, v in env.items()}}
    done = subprocess.run([python, path], env=full_env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        print(f"[peers] failed:\n{done.stderr[-2000:]}", file=sys.stderr)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
