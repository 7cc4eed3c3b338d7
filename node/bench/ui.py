"""Progress output while the benchmark runs (rich, on stderr)."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def step(msg: str) -> None:
    console.print(f"[bold cyan]▸[/] {msg}")


def note(msg: str) -> None:
    console.print(f"  {msg}")


def warn(msg: str) -> None:
    console.print(f"  [yellow]{msg}[/]")


@contextmanager
def progress(label: str, total: float, unit: str = "transfers"):
    """Yields ``update(completed, rate=None)``."""
    with Progress(
        TextColumn(f"  {label}"), BarColumn(), TextColumn("{task.completed:>10,.0f}/{task.total:,.0f} " + unit),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console, transient=False,
    ) as p:
        task = p.add_task(label, total=total, rate="")

        def update(completed: float, rate: float | None = None) -> None:
            p.update(task, completed=completed, rate="" if rate is None else f"{rate:>9,.0f}/s")

        yield update
