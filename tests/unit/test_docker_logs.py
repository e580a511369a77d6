"""Reading Docker's framed log stream (miasma_grpc/runtime/logs.py) from bytes as the
engine sends them; the real engine is in tests/e2e/test_logs.py."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
from aiohttp.base_protocol import BaseProtocol
from hypothesis import given
from hypothesis import strategies as st

from miasma_grpc.domain.logs import MAX_LINE, Stream
from miasma_grpc.runtime.logs import frames, parse_message, parse_time, since_param

STAMP = b"2026-12-01T10:00:00.123456789Z"
AT = 1_796_119_200_123_456_789  # STAMP in nanoseconds


def frame(kind: int, payload: bytes) -> bytes:
    """One frame as Docker writes it."""
    return struct.pack(">BxxxL", kind, len(payload)) + payload


async def read_all(data: bytes) -> list[tuple[int, bytes, bool]]:
    """The frames :func:`frames` reads from ``data``."""
    reader = aiohttp.StreamReader(
        BaseProtocol(asyncio.get_running_loop()), 2**22, loop=asyncio.get_running_loop()
    )
    reader.feed_data(data)
    reader.feed_eof()
    return [item async for item in frames(reader)]


def test_docker_times_are_read_to_the_nanosecond_and_given_back_as_since() -> None:
    assert parse_time(STAMP.decode()) == AT
    assert parse_time("2026-12-01T10:00:00Z") == AT - 123_456_789
    assert since_param(AT) == "1796119200.123456789"


async def test_frames_tell_the_streams_apart_and_a_cut_frame_ends_the_stream() -> None:
    data = frame(1, STAMP + b" out\n") + frame(2, STAMP + b" err\n") + frame(1, b"x")[:6]
    got = await read_all(data)
    assert got == [(1, STAMP + b" out\n", False), (2, STAMP + b" err\n", False)]


async def test_a_huge_message_is_kept_to_the_limit_and_the_rest_is_skipped() -> None:
    huge = STAMP + b" " + b"a" * (MAX_LINE * 10) + b"\n"
    [(kind, kept, cut), after] = await read_all(frame(1, huge) + frame(2, STAMP + b" next\n"))
    assert (kind, cut) == (1, True)
    assert len(kept) < MAX_LINE + 1024
    assert after == (2, STAMP + b" next\n", False)  # the stream goes on after the skip
    line = parse_message(kind, kept, "c" * 64, cut=cut, details=False)
    assert line.truncated
    assert len(line.text) == MAX_LINE
    assert line.source == "c" * 12


def test_a_message_is_parsed_into_time_stream_text_and_source() -> None:
    line = parse_message(2, STAMP + b" boom \xff\n", "abcdef0123456789", cut=False, details=False)
    assert (line.time, line.stream, line.text) == (AT, Stream.STDERR, "boom \ufffd")
    assert (line.source, line.truncated) == ("abcdef012345", False)


def test_a_service_message_names_the_task_that_wrote_it() -> None:
    attributes = b"com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s1,"
    attributes += b"com.docker.swarm.task.id=taskid0123456789"
    line = parse_message(1, STAMP + b" " + attributes + b" hello world\n", "s1", cut=False,
                         details=True)  # fmt: skip
    assert (line.text, line.source) == ("hello world", "taskid012345")


@given(st.lists(st.tuples(st.sampled_from([1, 2]), st.binary(max_size=300)), max_size=20))
def test_any_sequence_of_frames_reads_back_as_written(messages: list[tuple[int, bytes]]) -> None:
    data = b"".join(frame(kind, payload) for kind, payload in messages)
    got = asyncio.run(read_all(data))
    assert got == [(kind, payload, False) for kind, payload in messages]
