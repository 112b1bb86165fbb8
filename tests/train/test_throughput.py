"""Throughput a user can size a run with: the steady-state rate excludes start-up."""

from __future__ import annotations

import time

import pytest
import yaml

from deepict_dask.cli.main import main
from deepict_dask.train import loop, parse_config, train
from deepict_dask.train.loop import steady_throughput
from tests.train.test_loop import _cfg, _toy


def test_steady_throughput_skips_warmup():
    times = [5.0, 2.0] + [0.1] * 30
    vps, per_step = steady_throughput(times, 1000, warmup=10)
    assert per_step == pytest.approx(0.1) and vps == pytest.approx(10_000)
    # a short run: its later half
    assert steady_throughput([3.0, 3.0, 0.2, 0.2], 10, warmup=10)[1] == pytest.approx(0.2)
    assert steady_throughput([], 10) == (0.0, 0.0)


def test_train_reports_steady_state_without_slow_first_step(tmp_path, monkeypatch, capsys):
    """A first batch that takes 1.5 s (start-up) lowers the overall rate, not the steady one."""

    class SlowStart(loop.BatchLoader):
        def __next__(self):
            if not getattr(self, "_started", False):
                self._started = True
                time.sleep(1.5)
            return super().__next__()

    monkeypatch.setattr(loop, "BatchLoader", SlowStart)
    toys = [_toy(tmp_path, 0)]
    cfg = _cfg(tmp_path, toys, data={"validation_fraction": 0.0}, training={"steps": 12, "validate_every": 100})
    res = train(parse_config(cfg), progress=False)
    voxels_per_batch = 2 * 16 ** 3
    overall_per_step = voxels_per_batch / res.voxels_per_second
    assert res.seconds_per_step < 1.0
    assert overall_per_step > 1.5 / 12 and overall_per_step > res.seconds_per_step
    assert res.steady_voxels_per_second == pytest.approx(voxels_per_batch / res.seconds_per_step)

    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**cfg, "output": {"dir": str(tmp_path / "run2")}}))
    assert main(["train", str(tmp_path / "c.yaml"), "--no-progress", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "steady state" in out and "s/step" in out and "including start-up" in out
