"""One way for every benchmark to print its targets: measured value, bound, met or MISSED."""

from __future__ import annotations

from collections.abc import Iterable


def targets_report(res: dict, targets: Iterable[tuple[str, str, float, str]]) -> list[str]:
    """``TARGET key op bound: value met|MISSED (what)`` for each ``(key, op, bound, what)`` of ``targets``."""
    lines = []
    for key, op, bound, what in targets:
        v = float(res[key])
        ok = v >= bound if op == ">=" else v <= bound
        lines.append(f"TARGET {key} {op} {bound}: {v:.3g} {'met' if ok else 'MISSED'}  ({what})")
    return lines
