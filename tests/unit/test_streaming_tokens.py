"""Streaming URLs' tokens (single use, expiry, bound) and the parsing of terminal sizes."""

from __future__ import annotations

import asyncio

import pytest

from crio_py.streaming import ExecRequest
from crio_py.streaming.remotecommand import resizes, status
from crio_py.streaming.tokens import TokenCache, TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tokens_work_once_and_expire() -> None:
    clock = Clock()
    cache = TokenCache(60, clock=clock)
    request = ExecRequest("c1", cmd=["true"])
    token = cache.insert(request)
    assert len(token) >= 40 and token != cache.insert(request)
    assert cache.consume(token) is request
    assert cache.consume(token) is None
    late = cache.insert(request)
    clock.now += 61
    assert cache.consume(late) is None
    assert cache.consume("made-up") is None


def test_in_flight_tokens_are_bounded() -> None:
    clock = Clock()
    cache = TokenCache(60, max_in_flight=2, clock=clock)
    cache.insert(ExecRequest("c", cmd=["a"]))
    cache.insert(ExecRequest("c", cmd=["b"]))
    with pytest.raises(TooManyRequests):
        cache.insert(ExecRequest("c", cmd=["c"]))
    clock.now += 61  # expired ones make room
    cache.insert(ExecRequest("c", cmd=["d"]))


class Chunks:
    def __init__(self, *chunks: bytes):
        self.chunks = list(chunks)

    async def read(self, n: int = 0) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


def test_resize_messages_split_and_joined_anyhow() -> None:
    async def collect() -> list[tuple[int, int]]:
        channel = Chunks(
            b'{"Width":80,"Hei', b'ght":24}\n{"width":100,"height":40}{"Width":0,"Height":1}', b'{"Width":5'
        )
        return [size async for size in resizes(channel)]

    assert asyncio.run(collect()) == [(80, 24), (100, 40)]


def test_statuses_are_what_client_go_decodes() -> None:
    assert status(0) == {"metadata": {}, "status": "Success"}
    failure = status(3, cmd=["sh", "-c", "exit 3"])
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert status(message="boom")["status"] == "Failure"
