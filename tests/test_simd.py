"""SIMD level detection, the RANKFUNNEL_SIMD switch, the huge-pages switch and the threads switch."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import rankfunnel as rf


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_best_level_is_detected() -> None:
    levels = rf.simd_levels()
    assert levels[0] == "scalar"
    assert rf.simd_level() in levels


@pytest.mark.parametrize("level", rf.simd_levels())
def test_env_switch_forces_a_level(level: str) -> None:
    out = run("import rankfunnel as rf; print(rf.simd_level())", RANKFUNNEL_SIMD=level)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == level


def test_env_switch_rejects_unknown_or_unavailable_levels() -> None:
    unavailable = next((x for x in ("neon", "avx512", "avx2") if x not in rf.simd_levels()), "bogus")
    for value in ("bogus", unavailable):
        out = run("import rankfunnel as rf; rf.simd_level()", RANKFUNNEL_SIMD=value)
        assert out.returncode != 0
        assert "RANKFUNNEL_SIMD" in out.stderr


HNSW_ROUND_TRIP = (
    "import numpy as np, rankfunnel as rf; x = np.eye(8, dtype=np.float32); "
    "i = rf.HNSWIndex(8, 'l2'); i.add(x); print(i.search(x[:1], k=1)[1][0][0])"
)


@pytest.mark.parametrize("value", ["0", "off", "FALSE", "no", "1", "on", "yes", ""])
def test_huge_pages_switch_takes_on_and_off_words_quietly(value: str) -> None:
    out = run(HNSW_ROUND_TRIP, RANKFUNNEL_HUGE_PAGES=value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert "RANKFUNNEL_HUGE_PAGES" not in out.stderr


@pytest.mark.parametrize("value", ["2", "offf", "disable", "-1"])
def test_huge_pages_switch_warns_on_a_value_it_does_not_understand(value: str) -> None:
    out = run(HNSW_ROUND_TRIP, RANKFUNNEL_HUGE_PAGES=value)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    assert "RuntimeWarning" in out.stderr and f"RANKFUNNEL_HUGE_PAGES={value!r}" in out.stderr.replace(
        '"', "'"
    )


def test_num_threads_env_caps_default_threads() -> None:
    out = run("import rankfunnel as rf; print(rf.default_threads())", RANKFUNNEL_NUM_THREADS="1")
    assert out.stdout.strip() == "1"


def test_searches_from_python_threads_run_with_the_gil_released(rng: np.random.Generator) -> None:
    corpus = rng.standard_normal((60_000, 128)).astype(np.float32)
    idx = rf.FlatIndex(128, "dot")
    idx.add(corpus)
    queries = rng.standard_normal((8, 128)).astype(np.float32)
    want = idx.search(queries, k=5, threads=1)
    results: list[tuple[np.ndarray, np.ndarray]] = []
    ticks = 0
    done = threading.Event()

    def search() -> None:
        for _ in range(5):
            results.append(idx.search(queries, k=5, threads=1))
        done.set()

    t = threading.Thread(target=search)
    t.start()
    while not done.is_set():  # this thread keeps running Python while the other one computes
        ticks += 1
        time.sleep(0.0005)
    t.join()
    assert ticks > 5
    for _, i in results:
        np.testing.assert_array_equal(i, want[1])
