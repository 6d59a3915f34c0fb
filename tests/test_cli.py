"""The command line, through a subprocess as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def rankfunnel(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rankfunnel", *args], capture_output=True, text=True, timeout=300
    )


def test_demo_prints_results_and_timings() -> None:
    out = rankfunnel("demo", "-n", "5000", "-d", "32")
    assert out.returncode == 0, out.stderr
    assert "query 0:" in out.stdout and "QPS" in out.stdout and "single query" in out.stdout


def test_errors_are_one_line_with_nonzero_exit() -> None:
    out = rankfunnel("demo", "-n", "100", "-d", "0")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "dim must be at least 1" in out.stderr
