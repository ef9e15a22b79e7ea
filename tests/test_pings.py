"""flow.pings: a ping on a stream quiet for the interval, none on a busy one, none after stop."""

import asyncio
import gc

from ccproxyd.flow.pings import PING, Pings


def run(coroutine):
    return asyncio.run(coroutine)


def test_a_quiet_stream_gets_a_ping_each_interval_and_none_after_stop():
    async def scenario():
        sent: list[tuple[float, bytes]] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def send(data: bytes) -> None:
            sent.append((loop.time() - t0, data))
        pings = Pings(send, 0.05)
        while len(sent) < 3 and loop.time() - t0 < 5:
            await asyncio.sleep(0.01)
        pings.stop()
        count = len(sent)
        await asyncio.sleep(0.15)
        return sent, count
    sent, count = run(scenario())
    assert [data for _, data in sent] == [PING] * 3 and count == 3
    times = [0.0] + [at for at, _ in sent]
    assert all(later - earlier >= 0.045 for earlier, later in zip(times, times[1:])), times   # quiet 0.05 s each


def test_a_stream_that_writes_within_the_interval_gets_no_ping():
    async def scenario():
        sent: list[bytes] = []

        async def send(data: bytes) -> None:
            sent.append(data)
        pings = Pings(send, 0.2)                          # well above the gaps, even on a loaded machine
        for _ in range(20):                               # 0.6 s of writes 0.03 s apart: without them,
            await asyncio.sleep(0.03)                     # three pings
            pings.wrote()
        await asyncio.sleep(0.1)                          # quiet, but for less than the interval
        pings.stop()
        return sent
    assert run(scenario()) == []


def test_a_ping_that_cannot_be_written_is_retrieved_and_the_next_is_tried():
    async def scenario():
        tries: list[bytes] = []
        unretrieved: list[dict] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unretrieved.append(context))

        async def send(data: bytes) -> None:
            tries.append(data)
            raise ConnectionResetError("client gone")
        pings = Pings(send, 0.03)
        await asyncio.sleep(0.1)
        pings.stop()
        await asyncio.sleep(0)
        gc.collect()                                      # an unretrieved exception is reported here
        await asyncio.sleep(0)
        return tries, unretrieved
    tries, unretrieved = run(scenario())
    assert len(tries) >= 2
    assert unretrieved == []


def test_stop_cancels_a_ping_still_being_written():
    async def scenario():
        started = asyncio.Event()
        cancelled = []

        async def send(data: bytes) -> None:
            started.set()
            try:
                await asyncio.sleep(10)                   # a client that does not read
            except asyncio.CancelledError:
                cancelled.append(data)
                raise
        pings = Pings(send, 0.02)
        await asyncio.wait_for(started.wait(), 1)
        pings.stop()
        await asyncio.sleep(0.01)
        return cancelled
    assert run(scenario()) == [PING]
