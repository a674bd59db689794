"""Progress bars for work a person waits on (materialization), drawn with rich on stderr."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def partition_progress(*, enabled: bool = True) -> Iterator[Callable[[str], Callable[[int, int], None] | None]]:
    """Yields ``report(name)``: a callback ``(finished, total)`` drawing one bar per name."""
    if not enabled:
        yield lambda name: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("partitions"), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bars:

        def report(name: str) -> Callable[[int, int], None]:
            task = bars.add_task(name, total=None)

            def update(finished: int, total: int) -> None:
                bars.update(task, completed=finished, total=total)

            return update

        yield report
