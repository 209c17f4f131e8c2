"""The hub's SQLite write queue for node claims and answers (``node_api.WriteTurns``)."""

from __future__ import annotations

import asyncio

from medfed.hub.api.routes.node_api import WriteTurns


def test_write_turns_run_one_at_a_time_answers_first_and_skip_the_cancelled() -> None:
    async def scenario() -> tuple[list[str], int]:
        turns = WriteTurns()
        order: list[str] = []
        inside = [0, 0]  # now, most at once
        release = asyncio.Event()

        async def job(name: str, priority: int) -> None:
            async with turns.turn(priority):
                inside[0] += 1
                inside[1] = max(inside)
                order.append(name)
                if name == "first":
                    await release.wait()
                await asyncio.sleep(0)
                inside[0] -= 1

        first = asyncio.create_task(job("first", WriteTurns.CLAIM))
        await asyncio.sleep(0)
        claims = [asyncio.create_task(job(f"claim{i}", WriteTurns.CLAIM)) for i in range(3)]
        await asyncio.sleep(0)
        answer = asyncio.create_task(job("answer", WriteTurns.ANSWER))
        gone = asyncio.create_task(job("gone", WriteTurns.ANSWER))
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        await asyncio.gather(first, *claims, answer)
        async with turns.turn(WriteTurns.CLAIM):  # free again: no waiter left behind
            order.append("after")
        return order, inside[1]

    order, most = asyncio.run(scenario())
    assert order == ["first", "answer", "claim0", "claim1", "claim2", "after"]
    assert most == 1
