"""Group commit: what arrives during a write goes in the next one, each request gets its own
outcome, and a failed write or a cancelled request touches only its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from tether.api.batching import GroupCommit


class Store:
    """A write that blocks until the test lets it go, and remembers each batch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.broken = False

    def write(self, items: Sequence[int]) -> list[int | Exception]:
        self.entered.set()
        self.gate.wait(5)
        if self.broken:
            raise ConnectionError("store down")
        self.batches.append(list(items))
        return [ValueError(f"{i} refused") if i < 0 else i * 10 for i in items]


async def _entered(store: Store) -> None:
    while not store.entered.is_set():
        await asyncio.sleep(0.001)
    store.entered.clear()


def test_requests_arriving_during_a_write_go_together_in_the_next() -> None:
    store = Store()

    async def main() -> list[int]:
        commit: GroupCommit[int, int] = GroupCommit(store.write)
        first = asyncio.create_task(commit.submit(1))
        await _entered(store)  # the first write runs (alone) and holds
        rest = [asyncio.create_task(commit.submit(i)) for i in range(2, 7)]
        await asyncio.sleep(0)
        store.gate.set()
        results = [await first, *[await t for t in rest]]
        assert commit.writes == 2
        return results

    assert asyncio.run(main()) == [10, 20, 30, 40, 50, 60]
    assert store.batches == [[1], [2, 3, 4, 5, 6]]


def test_a_refused_item_fails_alone_and_a_failed_write_fails_its_whole_batch() -> None:
    store = Store()
    store.gate.set()

    async def main() -> None:
        commit: GroupCommit[int, int] = GroupCommit(store.write)
        results = await asyncio.gather(
            commit.submit(1), commit.submit(-2), commit.submit(3), return_exceptions=True
        )
        assert results[0] == 10 and results[2] == 30
        assert isinstance(results[1], ValueError) and str(results[1]) == "-2 refused"
        store.broken = True
        failed = await asyncio.gather(commit.submit(4), commit.submit(5), return_exceptions=True)
        assert all(isinstance(f, ConnectionError) for f in failed)
        store.broken = False
        assert await commit.submit(6) == 60  # the next write goes ahead

    asyncio.run(main())


def test_a_cancelled_request_is_skipped_and_batches_are_bounded() -> None:
    store = Store()

    async def main() -> None:
        commit: GroupCommit[int, int] = GroupCommit(store.write, max_batch=2)
        first = asyncio.create_task(commit.submit(1))
        await _entered(store)
        gone = asyncio.create_task(commit.submit(2))
        kept = [asyncio.create_task(commit.submit(i)) for i in (3, 4)]
        await asyncio.sleep(0)
        gone.cancel()
        store.gate.set()
        assert await first == 10
        assert [await t for t in kept] == [30, 40]
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    # the cancelled request's item was written all the same (a write cannot be taken
    # back once queued), and no batch took more than two
    assert store.batches == [[1], [2, 3], [4]]
