"""A stable sample of a profile's contacts by a hash of their keys, in one place for every
service that estimates from one (segment-svc's previews; contact-svc's 1-in-256 sample for
counts is the same hash's bucket 0). Pure."""

from __future__ import annotations

import zlib

# Each contact falls in one of this many buckets by its key; bucket 0 is a 1-in-256 sample.
SAMPLE_BUCKETS = 256


def sample_bucket(key: str) -> int:
    """The contact's bucket, 0 to SAMPLE_BUCKETS - 1: a stable hash (CRC-32) of its key, spread
    evenly over any range of keys or values, so any set of buckets is an unbiased sample."""
    return zlib.crc32(key.encode()) % SAMPLE_BUCKETS


def two_significant(n: int) -> int:
    """`n` to two significant digits, as an estimate is shown (its error is larger)."""
    return round(n, 2 - len(str(n)))
