#!/usr/bin/env python3
"""deploy/haproxy/haproxy.cfg with one `server` line per instance in each backend (the shipped file
lists three). Used by scripts/cluster.sh and the cluster tests.

    python3 scripts/lib/haproxy_config.py OUT HOST:PORT [HOST:PORT ...]
"""
import re
import sys
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"


def render(backends: list[str]) -> str:
    """The config text with the servers of every backend replaced by `backends` (HOST:PORT each)."""
    lines = "\n".join(f"    server rtd{i + 1} {b} proto h2 check check-proto h1" for i, b in enumerate(backends))
    text, n = re.subn(r'(    server rtd\d "\$\{RTD_BACKEND_\d\}"[^\n]*\n)+', lines + "\n", CONFIG.read_text())
    if n != 3:
        raise ValueError(f"expected three backends in {CONFIG}, found {n}")
    return text


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(render(sys.argv[2:]))
