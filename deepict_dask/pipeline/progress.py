"""What the user sees during and after ``deepict run``: live progress and the closing summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from deepict_dask.layout import RunLayout
from deepict_dask.pipeline.engine import ProgressSink

if TYPE_CHECKING:
    from rich.console import Console

    from deepict_dask.pipeline.run import RunResult


class RichProgress(ProgressSink):
    """A live bar: tomograms done / failed / running / queued, and the dashboard address."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Any = None
        self.task: Any = None

    def start(self, total: int, dashboard: str | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if dashboard:
            self.console.print(f"Dask dashboard: [link={dashboard}]{dashboard}[/link]")
        self.progress = Progress(
            TextColumn("[bold]tomograms"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=self.console,
        )
        self.task = self.progress.add_task("tomograms", total=total, status="")
        self.progress.start()

    def update(self, done: int, failed: int, running: int, queued: int, last: str = "") -> None:
        if self.progress is None:
            return
        status = f"[green]{done} done[/] [red]{failed} failed[/] [yellow]{running} running[/] {queued} queued"
        if last:
            status += f"  [dim]{last[:60]}[/]"
        self.progress.update(self.task, completed=done + failed, status=status)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


class LineProgress(ProgressSink):
    """One line per finished tomogram, for logs of batch jobs (no terminal)."""

    def __init__(self, console: Console):
        self.console = console
        self.total = 0
        self.seen = 0

    def start(self, total: int, dashboard: str | None) -> None:
        self.total = total
        self.console.print(f"{total} tomograms" + (f"; Dask dashboard: {dashboard}" if dashboard else ""))

    def update(self, done: int, failed: int, running: int, queued: int, last: str = "") -> None:
        if done + failed > self.seen:
            self.seen = done + failed
            self.console.print(f"[{done + failed}/{self.total}] {last} ({done} done, {failed} failed, {running} running)")


def print_outcome(result: RunResult, console: Console) -> None:
    """Failures as a table with reasons, then where the outputs are and what was found."""
    from rich.table import Table

    outcomes = result.outcomes
    done = [o for o in outcomes.values() if o.status == "done"]
    if result.failed:
        table = Table(title=f"{len(result.failed)} tomogram(s) failed", title_style="bold red")
        for col in ("tomogram", "stage", "reason"):
            table.add_column(col, overflow="fold")
        for o in result.failed:
            table.add_row(o.name, o.failed_stage or "", o.reason or "")
        console.print(table)
    rs = result.run_stages
    if rs is not None and rs.status == "failed":
        console.print(f"[bold red]run-level stage {rs.failed_stage} failed:[/] {rs.reason}", highlight=False)
    ran = sum(1 for o in done if o.ran)
    console.print(f"{len(done)} of {len(outcomes)} tomograms done ({ran} computed, {len(done) - ran} already "
                  f"up to date), {len(result.failed)} failed, in {result.seconds:.1f} s")
    for label, path in result.outputs.items():
        console.print(f"  {label:<14} {path}")
    console.print(f"  {'tomograms':<14} {RunLayout(result.run_dir).tomograms_dir}")
    ev = result.evaluation
    if ev and "f1" in ev:
        parts = [f"F1 {ev['f1']:.3f} (precision {ev.get('precision', 0):.3f}, recall {ev.get('recall', 0):.3f})"]
        for cls, m in (ev.get("per_class") or {}).items():
            if isinstance(m, dict) and "f1" in m:
                parts.append(f"{cls} {m['f1']:.3f}")
        console.print("  evaluation     " + "; ".join(parts))
