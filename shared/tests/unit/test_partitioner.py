"""Records land on the partitions Kafka's own clients choose for their keys."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from contacts_shared.kafka import key_partitioner, murmur2, partition_of


def test_murmur2_gives_what_the_java_client_gives() -> None:
    # Kafka's UtilsTest.testMurmur2, whose results are signed 32-bit integers
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, signed in cases.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


@given(st.binary(max_size=300))
def test_murmur2_agrees_with_aiokafka(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


@given(st.text(max_size=120), st.integers(min_value=1, max_value=64))
def test_keys_land_where_the_default_partitioner_puts_them(key: str, partitions: int) -> None:
    every = list(range(partitions))
    expected = DefaultPartitioner()(key.encode(), every, every)
    assert key_partitioner(key.encode(), every, every) == expected
    assert partition_of(key, partitions) == expected


def test_records_without_a_key_go_to_an_available_partition() -> None:
    assert key_partitioner(None, [0, 1, 2, 3], [2]) == 2
    assert key_partitioner(None, [0, 1], []) in (0, 1)
