"""Progress of long tasks (sweeps, searches, walk-forwards, downloads) for the command line.

rich is imported only when a bar is shown.
"""

from __future__ import annotations


class Progress:
    """Report a long task's progress: a rich bar on stderr, a user callback, or nothing.

    Parameters
    ----------
    progress : bool or callable
        True shows a transient progress bar on stderr; a callable gets ``(done, total)``;
        False reports nothing.
    total : int
        Units of work in the task.
    label : str
        The bar's description.

    Entering returns the function to call with the units done so far.
    """

    def __init__(self, progress, total: int, label: str) -> None:
        self._progress = progress
        self._total = total
        self._label = label
        self._bar = None

    def __enter__(self):
        if self._progress is True:
            import rich.progress
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = rich.progress.Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=self._total)
        return self._report

    def _report(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        elif callable(self._progress):
            self._progress(done, self._total)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
