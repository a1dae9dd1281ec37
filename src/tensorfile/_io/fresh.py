"""Fresh memory for remote reads, faulted in beside the transfers.

A remote whole-model load receives into new memory. The first touch of each
page is a page fault and the kernel's zeroing of the page; taken on the
event loop, which holds the GIL, it held up every transfer behind it. So a
helper thread faults the pages in, one request's memory at a time, in the
order the requests are planned (:class:`FaultIn`), and each request is sent
only once its memory is resident: nothing the helper writes can be a byte
that has landed.
"""

from __future__ import annotations

import asyncio
import mmap
import threading
from typing import Any

import numpy as np


def fresh_buffer(size: int) -> np.ndarray[Any, Any]:
    """``size`` bytes of new private memory for a read with ``fresh=True``,
    in ordinary pages. numpy would ask for transparent huge pages for an
    array this big; faulted in beside the transfers, they cost more here
    (2 GiB over loopback, alternating with tensorizer: 2.8-3.2 s in ordinary
    pages, 4.5-4.6 s in huge pages)."""
    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows: no huge-page advice to avoid
        return np.empty(size, dtype=np.uint8)
    return np.frombuffer(mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE), np.uint8)[:size]


class FaultIn:
    """Fresh memory faulted in on a helper thread (:func:`fault_in`), one
    batch of views per request, in the order the requests are planned."""

    def __init__(self, loop: asyncio.AbstractEventLoop, batches: list[list[memoryview]]) -> None:
        self._ready = [asyncio.Event() for _ in batches]
        self._stop = threading.Event()
        self._done: asyncio.Future[None] = loop.create_future()
        threading.Thread(target=fault_in, args=(loop, batches, self._ready, self._stop, self._done),
                         name="tensorfile-fault-in", daemon=True).start()

    async def ready(self, i: int) -> None:
        """Return once request ``i``'s memory is resident."""
        await self._ready[i].wait()

    async def close(self) -> None:
        """Stop the helper and return once it has."""
        self._stop.set()
        await self._done


def fault_in(loop: asyncio.AbstractEventLoop, batches: list[list[memoryview]],
             ready: list[asyncio.Event], stop: threading.Event,
             done: asyncio.Future[None]) -> None:
    """Fault in the pages of each batch of views in turn (numpy writes one
    byte per page, without the GIL, while the loop receives), then set the
    batch's event (2 GiB over loopback, fresh processes alternating with
    tensorizer's: 2.4-3.0 s with this helper, 4.3-7.7 s faulting them all
    in first)."""
    try:
        for views, event in zip(batches, ready, strict=True):
            if stop.is_set():
                break
            for v in views:
                if len(v):
                    pages = np.frombuffer(v, np.uint8)
                    pages[:: mmap.PAGESIZE] = 0
                    pages[-1] = 0
            loop.call_soon_threadsafe(event.set)
    finally:
        # However it ended, no request waits on it any longer (the rest of
        # the pages fault on the loop), and the read may return.
        for event in ready:
            loop.call_soon_threadsafe(event.set)
        loop.call_soon_threadsafe(done.set_result, None)
