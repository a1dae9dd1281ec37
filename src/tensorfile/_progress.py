"""Progress of a long job in bytes: the one progress type (hashing, signing, converting)."""

from __future__ import annotations

import threading
from collections.abc import Callable

#: ``progress(bytes_done, bytes_total)``; called from worker threads, one call at a time.
ProgressCallback = Callable[[int, int], None]


class Progress:
    """Thread-safe byte counter that forwards each step to the caller's callback."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self.total = total
        self.done = 0
        self._callback = callback
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        if self._callback is None:
            return
        with self._lock:
            self.done += n
            self._callback(self.done, self.total)
