"""LeaderElector: the leader lock of one group, with a TTL and fencing.

``SET PX`` takes the lock when free or already ours (and draws a new term's epoch
from the server clock),
a compare-and-``PEXPIRE`` script renews it only while this process still holds
it (publishing the leader's status in the same step), and a compare-and-``DEL``
releases it with a farewell status. The key names are the group's
:class:`~alpaca_di.scaleout.wire.SharingKeys`.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from alpaca_di.errors import ConfigurationError
from alpaca_di.scaleout.wire import SharingKeys

__all__ = ["LeaderElector"]

# KEYS: lock, epoch. ARGV: identity, ttl ms. Returns the new epoch, 0 when held by another.
# Epochs come from the server clock (and exceed the last one), so they keep increasing
# even when Redis lost the epoch key: it may expire after a week of disuse.
# A holder taking its own lock again (it stepped down while Redis was unreachable, say
# across a Sentinel failover, or it lost the reply) starts a new term with a new epoch
# too: each term numbers its trade updates from 1, so a reused epoch would make every
# reader drop the new term's first updates as duplicates of the old term's.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local epoch = math.max(now, last + 1)
redis.call('SET', KEYS[2], string.format('%d', epoch), 'PX', 604800000)
return epoch
"""
# KEYS: lock, status. ARGV: identity, ttl ms, status ('' for none), status channel.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
return 1
"""
# KEYS: lock, status. ARGV: identity, farewell status, status channel.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""


class LeaderElector:
    """One Redis lock with a TTL: acquire, renew (fenced), release.

    ``deadline`` is the monotonic time by which the holder must have stopped
    acting as leader if no renewal succeeded: the TTL counted from when the
    last successful command was *sent*, minus ``guard`` (the time the holder
    needs to close its socket). All methods run on the client's loop.

    Example::

        elector = LeaderElector(client, SharingKeys("alpaca-di", tag), "web-1:42:ab12cd",
                                ttl=3.0, guard=1.5)
        if await elector.acquire():
            ...                                  # lead until elector.deadline
            assert await elector.renew(status.encode())
            await elector.release(farewell.encode())
    """

    def __init__(
        self, client: Redis, keys: SharingKeys, identity: str, *, ttl: float, guard: float
    ) -> None:
        if guard >= ttl:
            raise ConfigurationError(
                f"the fencing guard ({guard} s) must be below the TTL ({ttl} s)"
            )
        self.keys = keys
        self.identity = identity
        self.ttl = ttl
        self.guard = guard
        self.epoch = 0
        self.leading = False
        self.deadline = 0.0
        self._client = client
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def client(self) -> Redis:
        """The Redis client the lock's scripts are registered on."""
        return self._client

    @property
    def ttl_ms(self) -> int:
        """The lock TTL in milliseconds."""
        return int(self.ttl * 1000)

    def expired(self) -> bool:
        """True when the holder must step down now (no renewal within the guard)."""
        return time.monotonic() >= self.deadline

    async def acquire(self) -> int:
        """Try to take the lock; returns the new term's epoch, or 0 when another holds it."""
        sent = time.monotonic()
        result = await self._acquire(
            keys=[self.keys.leader, self.keys.epoch], args=[self.identity, self.ttl_ms]
        )
        epoch = int(result or 0)
        if epoch > 0:
            self.leading = True
            self.epoch = epoch
            self.deadline = sent + self.ttl - self.guard
        return epoch

    async def renew(self, status: bytes = b"") -> bool:
        """Extend the lock (and publish ``status``) if still held; False when lost."""
        sent = time.monotonic()
        result = await self._renew(
            keys=[self.keys.leader, self.keys.status],
            args=[self.identity, self.ttl_ms, status, self.keys.status_channel],
        )
        if int(result or 0) == 1:
            self.deadline = sent + self.ttl - self.guard
            return True
        self.leading = False
        return False

    async def release(self, farewell: bytes) -> bool:
        """Give the lock up (and publish ``farewell``) if still held."""
        self.leading = False
        result = await self._release(
            keys=[self.keys.leader, self.keys.status],
            args=[self.identity, farewell, self.keys.status_channel],
        )
        return int(result or 0) == 1
