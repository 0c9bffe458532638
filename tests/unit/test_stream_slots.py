"""api/stream_slots.py: turns for streaming base64 files (SEARCH_STREAM_SLOTS)."""

from __future__ import annotations

import asyncio

from api.stream_slots import StreamSlots


async def streams(slots: StreamSlots, names: list[str], pieces: int, log: list[str],
                  client_pause: dict[str, float]) -> None:
    """Each name streams `pieces` pieces; its client takes each piece after client_pause[name] seconds."""

    async def one(name: str) -> None:
        turn = slots.turn()
        try:
            for _ in range(pieces):
                await turn.take()
                log.append(f"+{name}")
                turn.lend()
                await asyncio.sleep(client_pause.get(name, 0.001))  # the client reading the piece
                log.append(f"-{name}")
        finally:
            turn.release()

    await asyncio.gather(*(one(name) for name in names))


def most_at_once(log: list[str]) -> int:
    active: set[str] = set()
    most = 0
    for event in log:
        (active.add if event[0] == "+" else active.discard)(event[1:])
        most = max(most, len(active))
    return most


def test_at_most_count_streams_produce_at_once() -> None:
    log: list[str] = []
    asyncio.run(streams(StreamSlots(2), list("abcdef"), 3, log, {}))
    assert most_at_once(log) == 2 and len(log) == 6 * 3 * 2


def test_zero_means_no_limit() -> None:
    log: list[str] = []
    asyncio.run(streams(StreamSlots(0), list("abcd"), 2, log, {}))
    assert most_at_once(log) == 4


def test_a_client_that_stops_reading_gives_its_turn_up() -> None:
    log: list[str] = []

    async def both() -> float:
        slots = StreamSlots(1, patience_s=0.05)
        started = asyncio.get_running_loop().time()
        await streams(slots, ["slow", "fast"], 1, log, {"slow": 1.0, "fast": 0.001})
        return asyncio.get_running_loop().time() - started

    took = asyncio.run(both())
    # "fast" got the only slot while "slow"'s client sat on its piece, long before that client read on
    assert log.index("-fast") < log.index("-slow") and took < 1.5


def test_a_cancelled_stream_frees_its_slot() -> None:
    async def run() -> list[str]:
        slots, log = StreamSlots(1, patience_s=60), list[str]()  # only the cancel can free the slot in time
        stuck = asyncio.create_task(streams(slots, ["gone"], 1, log, {"gone": 60.0}))
        await asyncio.sleep(0.01)
        stuck.cancel()  # the client disconnected: Starlette closes the generator
        await asyncio.wait_for(streams(slots, ["next"], 1, log, {}), 1.0)
        return log

    assert asyncio.run(run())[-1] == "-next"
