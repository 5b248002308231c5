"""Uploads kept in pieces on the real server: read back whole and in order, whatever sizes the
body arrived in, nothing kept for an empty one, and dropped once their import has finished."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contacts_shared.commands import ImportAction
from contacts_shared.mongo import connect
from contacts_shared.settings import ServiceSettings
from contacts_shared.values import DateOrder
from import_svc.domain import ImportJob, ImportStatus, ReadOptions
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


async def test_a_finished_imports_upload_is_dropped(infrastructure: Any, unique: str) -> None:
    client = connect(infrastructure.mongodb_url, app_name="test")
    database = client[f"import_svc_{unique}"]
    store = ImportStore(database, ServiceSettings(), events_queued=lambda *_: None)
    jobs = []
    for name in ("running", "done"):
        upload_id, size = await store.store_upload(arriving(os.urandom(3 * UPLOAD_CHUNK_BYTES)))
        job = ImportJob.queue(
            id=f"{name}-{unique}",
            account_id="a1",
            profile_id="p1",
            action=ImportAction.APPEND,
            reference=None,
            file_name=f"{name}.csv",
            size=size,
            upload_id=upload_id,
            options=ReadOptions(None, None, DateOrder.DAY_FIRST),
            created_at=datetime.now(UTC),
        )
        await store.add(job)
        jobs.append(job)
    running, done = jobs
    stored = done.version
    done.finish(ImportStatus.CANCELLED, datetime.now(UTC))
    await store.save(done, expected_version=stored)

    assert await store.drop_finished_uploads() == 1
    assert [p async for p in store.read_upload(done.upload_id)] == []
    assert len([p async for p in store.read_upload(running.upload_id)]) == 3
    assert await store.drop_finished_uploads() == 0  # nothing left to drop
    assert (await store.get(done.id)) is not None  # the import itself stays
    await client.close()
