"""Worker processes that never outlive the process that started them.

A ``ProcessPoolExecutor``'s workers wait for work on a pipe; when their parent is killed with
``kill -9`` nobody closes it and they live on as orphans holding their memory. Every pool of the
pipeline starts its workers through :func:`worker_pool`: each one watches its parent and exits
within a second of the parent's death.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

PARENT_POLL_SECONDS = 0.5


def _exit_when_orphaned(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # re-parented: the process that started us is gone
            os._exit(1)
        time.sleep(PARENT_POLL_SECONDS)


def watch_parent() -> None:
    """Start a daemon thread in this (worker) process that exits it when its parent dies."""
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True,
                     name="watch-parent").start()


def _initialise(initializer: Callable | None, initargs: tuple) -> None:
    watch_parent()
    if initializer is not None:
        initializer(*initargs)


def worker_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``workers`` processes that exit when this process dies."""
    return ProcessPoolExecutor(max_workers=workers, initializer=_initialise, initargs=(initializer, initargs))
