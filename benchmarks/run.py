"""Run the benchmarks, each in its own subprocess, and print/write their figures and peak memory.

Usage::

    python -m benchmarks [--quick] [--only NAME ...] [--json OUT.json] [--timeout S] [--list]
    python benchmarks/run.py ...            # the same

A benchmark is a module ``benchmarks/bench_<name>.py`` with ``run(quick: bool) -> dict`` returning
flat figures (numbers, strings, booleans). Each runs in a fresh Python process so that a crash,
a leak or a memory peak in one cannot disturb the others; the child reports its own peak RSS
(``getrusage``), and the parent samples the RSS of the whole process tree (the child and any Dask
workers it starts) with psutil. Figures whose name contains ``ratio`` or ``speedup`` are
the headline numbers (project vs baseline on the same work, same run) and get their own column.
The exit status is 1 when any benchmark failed or timed out.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HEADLINE = ("ratio", "speedup")


def discover(directory: Path = HERE) -> dict[str, Path]:
    """``{name: path}`` of every ``bench_<name>.py`` in ``directory``."""
    return {p.stem[len("bench_") :]: p for p in sorted(directory.glob("bench_*.py"))}


def _flat(figures: Any) -> dict[str, Any]:
    if not isinstance(figures, dict):
        raise TypeError(f"run() must return a dict, got {type(figures).__name__}")
    bad = [k for k, v in figures.items() if not (v is None or isinstance(v, (bool, int, float, str)))]
    if bad:
        raise TypeError(f"run() must return flat figures (numbers, strings, booleans); not flat: {bad}")
    return {str(k): v for k, v in figures.items()}


def child(path: Path, quick: bool, result: Path) -> int:
    """Inside the subprocess: import the module, call ``run(quick)``, write figures and peak RSS."""
    sys.path.insert(0, str(ROOT))
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks.{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        if not callable(getattr(module, "run", None)):
            raise AttributeError(f"{path.name} has no run(quick) function")
        out["figures"] = _flat(module.run(quick))
        out["status"] = "ok"
    except Exception as exc:  # report any failure of the benchmark, the runner goes on
        out["status"] = "failed"
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result.write_text(json.dumps(out))
    return 0 if out["status"] == "ok" else 1


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants; keeps the peak (MiB)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop_event.is_set():
            total = 0
            try:
                for p in [proc, *proc.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        continue
            except psutil.Error:
                break
            self.peak = max(self.peak, total / 2**20)
            self._stop_event.wait(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join(timeout=2)
        return self.peak


def run_one(name: str, path: Path, quick: bool, timeout: float) -> dict[str, Any]:
    """Run one benchmark in a subprocess; never raises for the benchmark's own failures."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.run", "--child", str(path), "--result", str(result)]
        if quick:
            cmd.append("--quick")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        t0 = time.perf_counter()
        log = Path(tmp) / "log.txt"
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            sampler = TreeSampler(proc.pid)
            sampler.start()
            status = None
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
                status = "timeout"
            tree_peak = sampler.stop()
        wall = time.perf_counter() - t0
        tail = log.read_text(errors="replace")[-3000:]
        if result.is_file():
            out = json.loads(result.read_text())
        else:
            out = {"status": status or "failed", "error": f"the benchmark process exited with status {proc.returncode}"}
        if status == "timeout":
            out["status"] = "timeout"
            out["error"] = f"did not finish within {timeout:g} s"
        out["wall_seconds"] = wall
        out["peak_tree_rss_mb"] = tree_peak
        if out["status"] != "ok":
            out["log_tail"] = tail
        out.setdefault("figures", {})
        return out


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in figures.items() if any(h in k.lower() for h in HEADLINE)}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def print_table(results: dict[str, dict[str, Any]], quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"benchmarks ({'quick' if quick else 'full'})")
    for c, j in (("benchmark", "left"), ("status", "left"), ("s", "right"), ("peak RSS MiB", "right"), ("ratios", "left"), ("other figures", "left")):
        t.add_column(c, justify=j, overflow="fold")
    for name, r in results.items():
        figs = r.get("figures", {})
        heads = headline(figs)
        rest = {k: v for k, v in figs.items() if k not in heads}
        status = r["status"] if r["status"] == "ok" else f"[red]{r['status']}[/red]: {r.get('error', '')}"
        peak = max(r.get("peak_rss_mb") or 0.0, r.get("peak_tree_rss_mb") or 0.0)
        t.add_row(
            name,
            status,
            f"{r.get('wall_seconds', 0):.1f}",
            f"{peak:.0f}",
            "\n".join(f"{k} = {_fmt(v)}" for k, v in heads.items()),
            ", ".join(f"{k}={_fmt(v)}" for k, v in rest.items()),
        )
    Console(width=200).print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="Run the benchmarks in benchmarks/bench_*.py.")
    p.add_argument("--quick", action="store_true", help="small CI-size inputs")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (e.g. evaluate or bench_evaluate)")
    p.add_argument("--json", metavar="OUT", help="write all results as JSON")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 600 quick, 3600 full)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--dir", type=Path, default=HERE, help=argparse.SUPPRESS)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.quick, args.result)
    found = discover(args.dir)
    if args.list:
        print("\n".join(found))
        return 0
    if args.only:
        wanted = [n.removeprefix("bench_").removesuffix(".py") for n in args.only]
        unknown = [n for n in wanted if n not in found]
        if unknown:
            print(f"unknown benchmark(s) {unknown}; available: {sorted(found)}", file=sys.stderr)
            return 2
        found = {n: found[n] for n in wanted}
    timeout = args.timeout or (600.0 if args.quick else 3600.0)
    results: dict[str, dict[str, Any]] = {}
    for name, path in found.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name, path, args.quick, timeout)
    print_table(results, args.quick)
    if args.json:
        report = {
            "quick": args.quick,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "benchmarks": results,
        }
        out = Path(args.json)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, out)
    return 0 if all(r["status"] == "ok" for r in results.values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
