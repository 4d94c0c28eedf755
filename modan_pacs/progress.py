"""Progress for output that is not a terminal: plain lines with an ETA instead of a live bar.

A live rich bar redraws one line; written to a file or a pipe (a batch job's log) it shows nothing
until the end. :class:`LineProgress` has the part of ``rich.progress.Progress``'s interface the
library uses (``add_task``, ``update``, ``advance``, ``remove_task``, context manager) and prints
one line per finished unit (per fold, per epoch) with the elapsed time and an ETA; tasks of many
small units (images) print at every tenth of the way. :func:`make_progress` picks one or the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable


def format_eta(seconds: float) -> str:
    """``"45s"``, ``"12m05s"``, ``"3h07m"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    start: float = field(default_factory=time.perf_counter)
    last_tenth: int = 0
    fields: dict[str, Any] = field(default_factory=dict)


class LineProgress:
    """One line per finished unit: ``[3/40] thyroid finetune modan repeat 1 fold 3  1m02s elapsed, ETA 12m30s``.

    Args:
        write: where lines go (e.g. ``console.print`` or ``print``).
        many: tasks with more units than this print only at every tenth of their total.
        clock: the time source (seconds), replaceable in tests.
    """

    def __init__(
        self, write: Callable[[str], Any] = print, *, many: int = 50, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.write = write
        self.many = many
        self.clock = clock
        self._tasks: dict[int, _Task] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        task_id = len(self._tasks)
        self._tasks[task_id] = _Task(description, total, start=self.clock(), fields=fields)
        return task_id

    def update(
        self,
        task_id: int,
        *,
        advance: float | None = None,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        """As rich's ``Progress.update``: a line is printed when units are finished (``advance``, or
        ``completed`` beyond the count so far)."""
        task = self._tasks[task_id]
        if description is not None:
            task.description = description
        if total is not None:
            task.total = total
        task.fields.update(fields)
        if completed is not None and completed > task.completed:
            advance = (advance or 0) + completed - task.completed
        if advance:
            self.advance(task_id, advance)

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self._tasks[task_id]
        task.completed += advance
        if task.total and task.total > self.many:
            tenth = int(10 * task.completed / task.total)
            if tenth <= task.last_tenth:
                return
            task.last_tenth = tenth
        self.write(self.line(task_id))

    def line(self, task_id: int) -> str:
        """The line for a task as it stands."""
        task = self._tasks[task_id]
        elapsed = self.clock() - task.start
        done = f"{task.completed:g}"
        if not task.total:
            return f"[{done}] {task.description}  {format_eta(elapsed)} elapsed"
        eta = elapsed / task.completed * (task.total - task.completed) if task.completed else float("nan")
        eta_text = format_eta(eta) if eta == eta else "?"
        return f"[{done}/{task.total:g}] {task.description}  {format_eta(elapsed)} elapsed, ETA {eta_text}"

    def remove_task(self, task_id: int) -> None:
        self._tasks.pop(task_id, None)


def make_progress(console: Any, rich_factory: Callable[[], Any]) -> Any:
    """``rich_factory()`` (a live rich ``Progress``) when ``console`` is a terminal, else a
    :class:`LineProgress` printing through ``console.print``."""
    if getattr(console, "is_terminal", False):
        return rich_factory()
    return LineProgress(lambda text: console.print(text, highlight=False, markup=False, soft_wrap=True))
