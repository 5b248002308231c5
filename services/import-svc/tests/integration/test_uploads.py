"""Uploads kept in pieces on the real server: read back whole and in order, whatever sizes the
body arrived in, and nothing kept for an empty one."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contacts_shared.mongo import connect
from contacts_shared.settings import ServiceSettings
from import_svc.repository import UPLOAD_CHUNK_BYTES, ImportStore

pytestmark = pytest.mark.integration


async def arriving(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_an_upload_reads_back_whole_and_in_order(infrastructure: Any, unique: str) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    database = client[f"import_svc_{unique}"]
    store = ImportStore(database, ServiceSettings(), events_queued=lambda *_: None)
    # More than ten pieces, one part larger than a piece, small parts between.
    parts = [os.urandom(n) for n in (10, 3 * UPLOAD_CHUNK_BYTES + 7, 1, UPLOAD_CHUNK_BYTES)]
    parts += [os.urandom(UPLOAD_CHUNK_BYTES // 2) for _ in range(12)]
    upload_id, size = await store.store_upload(arriving(*parts))
    other_id, _ = await store.store_upload(arriving(b"another upload"))

    assert size == sum(map(len, parts))
    read = [piece async for piece in store.read_upload(upload_id)]
    assert b"".join(read) == b"".join(parts)
    assert max(map(len, read)) <= UPLOAD_CHUNK_BYTES and len(read) > 10
    assert [piece async for piece in store.read_upload(other_id)] == [b"another upload"]

    empty_id, empty_size = await store.store_upload(arriving(b"", b""))
    assert empty_size == 0 and [p async for p in store.read_upload(empty_id)] == []
    assert await database["uploads"].count_documents({}) == len(read) + 1
    await client.close()
