"""The Redis Streams backend (``pip install 'forebay[redis]'``): see ``docs/redis.md``."""

from forebay.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
