"""Speed and memory benchmarks: ``python -m benchmarks [--quick] [--only NAME...] [--json OUT]``.

Each ``benchmarks/bench_<topic>.py`` exposes ``run(quick: bool) -> dict`` of flat figures (ratios of
project vs baseline measured in the same run, times, peak memory) and is runnable on its own as
``python benchmarks/bench_<topic>.py [--quick]``. :mod:`benchmarks.run` runs them all, each in its own
subprocess.
"""
