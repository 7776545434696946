"""Client-side throughput control: token buckets for RPM/TPM and an AIMD concurrency gate.

- `TokenBucket` works on debt: a request waits until the bucket is non-negative, then its
  cost is taken (actual tokens are charged when known), so the long-run rate never exceeds
  the limit even though output sizes are only known afterwards.
- `AdaptiveGate` bounds requests in flight. A 429 shrinks the window by a quarter for the
  whole client - once per generation of requests, so a burst of 429s from requests that
  were all sent before the first one came back counts as one congestion signal - and pauses
  every sender until the server's `Retry-After` has passed. Each success grows the window
  by one, up to the configured concurrency.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from distillery.teacher.config import TeacherConfig


class TokenBucket:
    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = per_minute
        self.level = per_minute
        self.updated = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    async def wait(self) -> None:
        while True:
            self._refill()
            if self.level >= 0:
                return
            await asyncio.sleep(min(-self.level / self.rate, 5.0))

    def charge(self, amount: float) -> None:
        self._refill()
        self.level -= amount


def rate_buckets(config: TeacherConfig) -> list[tuple[str, TokenBucket]]:
    """One bucket per per-minute limit that is set: ("requests" | "input" | "output", bucket)."""
    return [
        (kind, TokenBucket(limit))
        for kind, limit in (
            ("requests", config.requests_per_minute),
            ("input", config.input_tokens_per_minute),
            ("output", config.output_tokens_per_minute),
        )
        if limit
    ]


class AdaptiveGate:
    def __init__(self, limit: int) -> None:
        self.max_limit = limit
        self.window = float(limit)
        self.in_flight = 0
        self.paused_until = 0.0
        self.throttle_events = 0
        self.epoch = 0  # bumped at each decrease; a 429 from an older epoch is not a new signal
        self._cond = asyncio.Condition()

    @property
    def limit(self) -> int:
        return max(1, int(self.window))

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch to pass to `throttle` if this request gets a 429."""
        async with self._cond:
            while True:
                pause = self.paused_until - time.monotonic()
                if pause > 0:
                    self._cond.release()
                    try:
                        await asyncio.sleep(pause)
                    finally:
                        await self._cond.acquire()
                    continue
                if self.in_flight < self.limit:
                    self.in_flight += 1
                    return self.epoch
                await self._cond.wait()

    async def release(self, ok: bool) -> None:
        async with self._cond:
            self.in_flight -= 1
            if ok and self.window < self.max_limit:
                self.window = min(float(self.max_limit), self.window + 1.0)
            free = self.limit - self.in_flight
            if free > 0:
                self._cond.notify(free)

    def throttle(self, retry_after: float | None, epoch: int | None = None) -> None:
        """A 429: shrink the window (once per epoch) and pause new sends for everyone."""
        self.throttle_events += 1
        if epoch is None or epoch == self.epoch:
            self.window = max(1.0, self.window * 0.75)
            self.epoch += 1
        if retry_after:
            self.paused_until = max(self.paused_until, time.monotonic() + retry_after)


def backoff_s(retry: int, initial_s: float, longest_s: float) -> float:
    """Seconds before retry number `retry` (1-based): `initial_s` doubling per retry, plus up to
    `initial_s` of random jitter (so clients that failed together do not retry in step),
    capped at `longest_s`."""
    return min(longest_s, initial_s * 2.0 ** min(retry - 1, 60) + random.uniform(0, initial_s))
