"""The threads templates with Jinja leaves render in, which a shutdown stops mid-render.

Python joins an executor's threads at interpreter exit: a render still running (up to its
``max_time``, or for ever with ``max_time: 0``) would keep a stopped gateway's process alive. Shutting
the pool down sets its stop signal, which every render budget opened in its threads checks with the
clock (``template_budget.Budget.in_time``), so a running render ends at its next check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from router.template_budget import stoppable


class RenderPool(ThreadPoolExecutor):
    def __init__(self, max_workers: int, thread_name_prefix: str = "router-render"):
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self.stop = threading.Event()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return super().submit(stoppable, self.stop, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.stop.set()  # before the join (wait=True), which would otherwise wait for the renders
        super().shutdown(wait, cancel_futures=cancel_futures)
