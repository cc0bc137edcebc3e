"""Admission like vLLM's: at most ``max_num_seqs`` requests run; the rest wait in FIFO order."""

from __future__ import annotations

import asyncio
from collections import deque


class SequenceScheduler:
    """A FIFO counting gate whose running and waiting counts feed the ``vllm:num_requests_*`` gauges."""

    def __init__(self, max_num_seqs: int) -> None:
        self.max_num_seqs = max_num_seqs
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        if self.running < self.max_num_seqs and not self._waiters:
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: pass it on instead of leaking it.
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        # Hand the slot straight to the oldest live waiter, so `running` never drops and rises again.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1
