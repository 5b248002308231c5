"""Sample buckets of contacts by their keys, and estimates to two significant digits."""

from __future__ import annotations

from collections import Counter

from contacts_shared.sampling import SAMPLE_BUCKETS, sample_bucket, two_significant


def test_a_contacts_bucket_is_stable_and_buckets_are_even() -> None:
    assert sample_bucket("ana@example.com") == sample_bucket("ana@example.com")
    # CRC-32: the bucket a stored document carries must never change with the code.
    assert sample_bucket("user1@example.com") == 0xE2122426 % SAMPLE_BUCKETS == 38
    sizes = Counter(sample_bucket(f"user{i}@example.com") for i in range(SAMPLE_BUCKETS * 200))
    assert set(sizes) == set(range(SAMPLE_BUCKETS))
    assert all(140 <= n <= 260 for n in sizes.values())


def test_an_estimate_keeps_two_significant_digits() -> None:
    assert [two_significant(n) for n in (0, 7, 42, 125_099, 999_936, 1_049)] == [
        0,
        7,
        42,
        130_000,
        1_000_000,
        1_000,
    ]
