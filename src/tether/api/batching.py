"""Group commit: requests that arrive while a write runs are written together by the next.

The nodes of one rollout step finish together and their agents report within
milliseconds of each other (a hundred at a thousand nodes). One transaction per report
is a few round trips to the store each, one after another; here the first report is
written at once, and those that arrive meanwhile wait for that write and then go in one
transaction. No report waits longer than one write before its own starts, and nothing
is delayed when reports come one at a time.

Each request gets its own outcome: the write returns a result or an exception per item,
and one item refused (a stale hash) does not fail the others. An exception from the write
itself (the store is down) fails every request of that batch, as it would have failed
each one alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

__all__ = ["GroupCommit"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    """Writes items in batches on a worker thread (module doc); use from one event loop."""

    def __init__(
        self,
        write: Callable[[Sequence[Item]], Sequence[Result | Exception]],
        *,
        max_batch: int = 500,
    ) -> None:
        #: Writes a batch in one transaction; returns one outcome per item, in order.
        self._write = write
        #: Most items one write takes (bounds the statements' size); the rest go next.
        self.max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None
        #: Writes done (a test reads it to see requests batched).
        self.writes = 0

    async def submit(self, item: Item) -> Result:
        """Write ``item`` with whatever else is waiting; its result, or raise its error."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    outcomes = await run_in_threadpool(self._write, [item for item, _ in batch])
                except Exception as exc:  # the write failed: so did every request in it
                    outcomes = [exc] * len(batch)
                self.writes += 1
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():  # its request was cancelled (the client went away)
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._writer = None
