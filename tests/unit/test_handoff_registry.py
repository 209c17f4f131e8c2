"""The registry of parked long polls (:mod:`medfed.hub.handoff`), on a real event loop.

A transaction reserves, for each key it will wake, its newest parked waiters up to the
server's ``most`` (a node's poll: one claim serves one poll; a task's end serves several
waits), newest first, once; keys of no server's kind, and keys it does not wake, are
left alone; a reserved waiter does not leave but gets what the transaction delivers,
from another thread; a transaction whose server fails hands every waiter it reserved
None (each goes on as before), and one that rolled back hands each None too.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from medfed.hub.handoff import Handoffs, Server, hand_over, settle


class _Session:
    """What :func:`hand_over` reads of a session: the keys its commit will wake."""

    def __init__(self, *keys: str) -> None:
        self.info: dict[str, Any] = {"wake": dict.fromkeys(keys)}


def _served(session: Any, what: str) -> str:
    if what == "broken":
        raise RuntimeError("the database went away")
    return f"served {what}"


def _handoffs() -> Handoffs:
    return Handoffs({"node": Server(_served, most=1), "round": Server(_served, most=2)})


def test_the_newest_waiters_of_a_key_are_reserved_once_up_to_the_servers_most() -> None:
    async def main() -> None:
        handoffs = _handoffs()
        old, new = handoffs.park("node:1", "old poll"), handoffs.park("node:1", "new poll")
        first, second = handoffs.park("round:5", "a wait"), handoffs.park("round:5", "another")
        assert handoffs.waiting("node:1") == 2
        assert handoffs.reserve("node:1", most=1) == [new]
        assert handoffs.reserve("node:1", most=1) == [old]
        assert handoffs.reserve("node:1", most=1) == []
        third = handoffs.park("round:5", "a third")
        assert handoffs.reserve("round:5", most=2) == [third, second]  # the newest first
        assert handoffs.waiting("round:5") == 1
        assert handoffs.reserve("round:5", most=2) == [first]
        assert handoffs.waiting("round:5") == 0
        other = handoffs.park("node:2", "node 2")
        assert handoffs.leave("node:2", other)  # not reserved: it leaves
        assert handoffs.waiting("node:2") == 0

    asyncio.run(main())


def test_a_reserved_waiter_stays_for_what_another_thread_delivers() -> None:
    async def main() -> None:
        handoffs = _handoffs()
        parked = handoffs.park("node:7", "node 7")
        assert handoffs.reserve("node:7", most=1) == [parked]
        assert not handoffs.leave("node:7", parked)  # it must wait for its hand-over
        thread = threading.Thread(target=Handoffs.deliver, args=(parked, "claim"))
        thread.start()
        assert await asyncio.wait_for(parked.future, 30) == "claim"
        thread.join()

    asyncio.run(main())


def test_a_transaction_serves_only_the_keys_it_wakes_and_of_a_known_kind() -> None:
    async def main() -> None:
        handoffs = _handoffs()
        poll, wait = handoffs.park("node:1", "poll"), handoffs.park("round:5", "wait")
        progress = handoffs.park("task:5", "progress wait")  # no server for task keys
        elsewhere = handoffs.park("node:2", "node 2")  # not woken
        handed = hand_over(handoffs, _Session("node:1", "round:5", "task:5"))
        assert handed == [(poll, "served poll"), (wait, "served wait")]
        settle(handed, committed=True)
        assert await asyncio.wait_for(poll.future, 30) == "served poll"
        assert await asyncio.wait_for(wait.future, 30) == "served wait"
        assert handoffs.waiting("task:5") == 1 and not progress.reserved
        assert handoffs.waiting("node:2") == 1 and not elsewhere.reserved

    asyncio.run(main())


def test_a_failed_server_or_a_rollback_hands_every_reserved_waiter_none() -> None:
    async def main() -> None:
        handoffs = _handoffs()
        waits = [handoffs.park("round:5", "fine"), handoffs.park("round:5", "broken")]
        with pytest.raises(RuntimeError, match="went away"):
            hand_over(handoffs, _Session("round:5"))
        for parked in waits:
            assert await asyncio.wait_for(parked.future, 30) is None
        poll = handoffs.park("node:1", "poll")
        handed = hand_over(handoffs, _Session("node:1"))
        settle(handed, committed=False)  # its commit failed
        assert await asyncio.wait_for(poll.future, 30) is None

    asyncio.run(main())


def test_a_transaction_serves_at_most_its_total_of_one_kind() -> None:
    async def main() -> None:
        handoffs = Handoffs({"node": Server(_served, most=1, total=2)})
        polls = [handoffs.park(f"node:{i}", f"node {i}") for i in range(4)]
        keys = [f"node:{i}" for i in range(4)]
        handed = hand_over(handoffs, _Session(*keys))
        assert [parked for parked, _ in handed] == polls[:2]
        settle(handed, committed=True)
        assert handoffs.waiting("node:2") == 1 and handoffs.waiting("node:3") == 1

    asyncio.run(main())
