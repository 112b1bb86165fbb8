"""The benchmark runner: discovery, subprocess isolation, failures, JSON output."""

from __future__ import annotations

import json

from benchmarks.run import discover, main

GOOD = '''
def run(quick: bool) -> dict:
    import numpy as np
    block = np.ones(20_000_000 if not quick else 5_000_000, dtype=np.uint8)  # ~5 MB peak in quick mode
    return {"quick": quick, "work_speedup_ratio": 2.5, "n": int(block.sum())}
'''
BAD = '''
def run(quick: bool) -> dict:
    raise RuntimeError("boom")
'''
NESTED = '''
def run(quick: bool) -> dict:
    return {"nested": {"a": 1}}
'''
CRASH = '''
import os
def run(quick: bool) -> dict:
    os._exit(3)
'''


def test_runner_on_dummy_benchmarks(tmp_path, capsys):
    for name, text in {"good": GOOD, "bad": BAD, "nested": NESTED, "crash": CRASH}.items():
        (tmp_path / f"bench_{name}.py").write_text(text)
    (tmp_path / "helper.py").write_text("x = 1\n")
    assert sorted(discover(tmp_path)) == ["bad", "crash", "good", "nested"]
    out = tmp_path / "res.json"
    rc = main(["--dir", str(tmp_path), "--quick", "--json", str(out)])
    assert rc == 1  # some failed
    data = json.loads(out.read_text())
    b = data["benchmarks"]
    assert b["good"]["status"] == "ok" and b["good"]["figures"] == {"quick": True, "work_speedup_ratio": 2.5, "n": 5_000_000}
    assert b["good"]["peak_rss_mb"] > 5
    assert b["bad"]["status"] == "failed" and "boom" in b["bad"]["error"]
    assert b["nested"]["status"] == "failed" and "not flat" in b["nested"]["error"]
    assert b["crash"]["status"] == "failed" and "status 3" in b["crash"]["error"]
    text = capsys.readouterr().out
    assert "work_speedup_ratio = 2.5" in text
    assert main(["--dir", str(tmp_path), "--quick", "--only", "good"]) == 0
    assert main(["--dir", str(tmp_path), "--only", "nosuch"]) == 2


def test_runner_timeout(tmp_path):
    (tmp_path / "bench_slow.py").write_text("import time\ndef run(quick):\n    time.sleep(60)\n    return {}\n")
    out = tmp_path / "r.json"
    assert main(["--dir", str(tmp_path), "--quick", "--timeout", "3", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["benchmarks"]["slow"]["status"] == "timeout"
