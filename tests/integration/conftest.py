"""Fixtures the Redis integration tests share (test_redis*.py): each test gets its own key
prefix on the server at ``REDIS_URL``, so tests never see each other's keys, and a missing
server skips the test on a laptop but fails it when ``CI`` is set (tests/servers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from forebay.backends.redis import RedisBackend
from forebay.testing import isolated_store, isolated_url
from tests.servers import REDIS_URL, require_server


@pytest.fixture
def redis_url() -> str:
    """A URL with a fresh key prefix of this test's own."""
    require_server("Redis", REDIS_URL)
    return isolated_url(REDIS_URL)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisBackend]:
    """An open Redis backend under ``redis_url``'s prefix; its keys dropped afterwards."""
    async with isolated_store(redis_url) as backend:
        assert isinstance(backend, RedisBackend)
        yield backend


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the same server (strings decoded), to look at the keys directly."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()
