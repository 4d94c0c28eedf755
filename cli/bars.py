"""The rich progress bar the commands draw: a label, the bar, done / total, any extra columns, the
elapsed and the remaining time. Presentation lives here, in the CLI; the library reports progress
through callbacks."""

from __future__ import annotations

from typing import Any


def progress_bar(console: Any = None, *, label: str = "[bold]{task.description}", extra: tuple = ()) -> Any:
    """A ``rich.progress.Progress`` with the project's columns (``extra`` go after done / total)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def counting_bar(description: str) -> tuple[Any, Any]:
    """A :func:`progress_bar` with one task, and the ``(done, total)`` callback that drives it (the
    library's progress callback)."""
    bar = progress_bar(label="{task.description}")
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update
