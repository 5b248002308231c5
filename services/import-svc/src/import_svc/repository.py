"""import-svc storage: imports (one document each, with the outbox of its events) and their
uploads (in pieces of 1 MB). An import is written whole, only if its version is the one read
(`save`), so its two writers, the worker holding its lease and the consumer of its outcomes,
never undo each other's changes."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timedelta

from pymongo import ASCENDING, IndexModel, ReturnDocument

from contacts_shared.commands import ImportAction
from contacts_shared.mongo import (
    Collection,
    Database,
    Document,
    StaleDocument,
    ensure_indexes,
    prefix_range,
    update_if,
)
from contacts_shared.outbox import (
    OUTBOX,
    OUTBOX_INDEX,
    EventsQueued,
    command_entry,
    outbox_entries,
    outbox_update,
)
from contacts_shared.settings import ServiceSettings
from contacts_shared.values import DateOrder
from import_svc.domain import Checkpoint, ImportJob, ImportStatus, Progress, ReadOptions

UNFINISHED = [s.value for s in ImportStatus if not s.finished]
FINISHED = [s.value for s in ImportStatus if s.finished]
# On an import while its upload's pieces exist: a finished import's are dropped (see
# `drop_finished_uploads`). Kept beside the written-whole fields, so `save` leaves it be.
UPLOAD_KEPT = "upload_kept"

UPLOAD_CHUNK_BYTES = 1024 * 1024


def _partitions(stored: Mapping[str, int]) -> dict[int, int]:
    return {int(p): n for p, n in stored.items()}


def _job(document: Document) -> ImportJob:
    options = document["options"]
    checkpoint = document["checkpoint"]
    lease = document.get("lease") or {}
    return ImportJob(
        id=document["_id"],
        account_id=document["account_id"],
        profile_id=document["profile_id"],
        action=ImportAction(document["action"]),
        reference=document.get("reference"),
        file_name=document.get("file_name"),
        size=document["size"],
        upload_id=document["upload_id"],
        options=ReadOptions(
            delimiter=options.get("delimiter"),
            encoding=options.get("encoding"),
            date_order=DateOrder(options["date_order"]),
            mapping=dict(options.get("mapping") or {}),
            ignore=tuple(options.get("ignore") or ()),
        ),
        status=ImportStatus(document["status"]),
        created_at=document["created_at"],
        checkpoint=Checkpoint(
            line=checkpoint["line"],
            rows_read=checkpoint["rows_read"],
            refused=checkpoint["refused"],
            sent=_partitions(checkpoint["sent"]),
            bytes_read=checkpoint.get("bytes_read", 0),  # absent from imports before it
        ),
        sending_done=document["sending_done"],
        progress=Progress(
            sent=_partitions(checkpoint["sent"]),
            counted=_partitions(document["counted"]),
            outcomes=Counter(document["outcomes"]),
        ),
        started_at=document.get("started_at"),
        finished_at=document.get("finished_at"),
        error=document.get("error"),
        problems=tuple(document.get("problems") or ()),
        header=tuple(document.get("header") or ()),
        loose_matches=tuple(tuple(pair) for pair in document.get("loose_matches") or ()),
        lease_owner=lease.get("owner"),
        lease_until=lease.get("until"),
        progress_told_at=document.get("progress_told_at"),
        purge_requested=document.get("purge_requested", False),
        deleted=document.get("deleted"),
        version=document["version"],
    )


def _document(job: ImportJob) -> Document:
    """The import's stored fields (the `_id` and its outbox apart)."""
    options = job.options
    return {
        "account_id": job.account_id,
        "profile_id": job.profile_id,
        "action": job.action.value,
        "reference": job.reference,
        "file_name": job.file_name,
        "size": job.size,
        "upload_id": job.upload_id,
        "options": {
            "delimiter": options.delimiter,
            "encoding": options.encoding,
            "date_order": options.date_order.value,
            # Column names may hold dots: kept as pairs, not as keys.
            "mapping": [[c, f] for c, f in options.mapping.items()],
            "ignore": list(options.ignore),
        },
        "status": job.status.value,
        "created_at": job.created_at,
        "checkpoint": {
            "line": job.checkpoint.line,
            "rows_read": job.checkpoint.rows_read,
            "refused": job.checkpoint.refused,
            "sent": _stored_partitions(job.checkpoint.sent),
            "bytes_read": job.checkpoint.bytes_read,
        },
        "sending_done": job.sending_done,
        "counted": _stored_partitions(job.progress.counted),
        "outcomes": dict(job.progress.outcomes),
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "problems": list(job.problems),
        "header": list(job.header),
        "loose_matches": [list(pair) for pair in job.loose_matches],
        "lease": {"owner": job.lease_owner, "until": job.lease_until} if job.lease_owner else None,
        "progress_told_at": job.progress_told_at,
        "purge_requested": job.purge_requested,
        "deleted": job.deleted,
        "version": job.version,
    }


def _stored_partitions(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(p): n for p, n in counts.items()}  # stored keys are strings


class ImportStore:
    def __init__(
        self, database: Database, settings: ServiceSettings, *, events_queued: EventsQueued
    ) -> None:
        self._settings = settings
        self._events_queued = events_queued
        self._imports: Collection = database["imports"]
        self._uploads: Collection = database["uploads"]

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._imports,
            [
                IndexModel([("status", ASCENDING)], name="by_status"),
                IndexModel([("account_id", ASCENDING), ("created_at", ASCENDING)], name="newest"),
                IndexModel([(UPLOAD_KEPT, ASCENDING)], name="uploads_kept"),
                OUTBOX_INDEX,
            ],
        )

    async def store_upload(self, chunks: AsyncIterator[bytes]) -> tuple[str, int]:
        """Stream an upload into `uploads`, a document per piece of at most
        `UPLOAD_CHUNK_BYTES` (`_id` = upload id:piece number), each written as it arrives, so
        memory holds one piece whatever the file's size (GridFS buffers up to 48 MB of chunks
        before a write: 235 MB resident for a 115 MB upload). Its id and size; an empty upload
        stores nothing (it is refused)."""
        upload_id = uuid.uuid4().hex
        size = pieces = 0
        async for chunk in chunks:
            for start in range(0, len(chunk), UPLOAD_CHUNK_BYTES):
                piece = chunk[start : start + UPLOAD_CHUNK_BYTES]
                await self._uploads.insert_one({"_id": f"{upload_id}:{pieces:09d}", "data": piece})
                pieces, size = pieces + 1, size + len(piece)
        return upload_id, size

    async def drop_finished_uploads(self, limit: int = 20) -> int:
        """Drop the uploads of finished imports (up to `limit`), needed only to resume one;
        how many. The pieces go first: a crash between leaves the import to be found again."""
        finished = self._imports.find(
            {UPLOAD_KEPT: True, "status": {"$in": FINISHED}}, {"upload_id": 1}, limit=limit
        )
        dropped = 0
        async for job in finished:
            await self._uploads.delete_many({"_id": prefix_range(f"{job['upload_id']}:")})
            await self._imports.update_one({"_id": job["_id"]}, {"$unset": {UPLOAD_KEPT: ""}})
            dropped += 1
        return dropped

    async def read_upload(self, upload_id: str) -> AsyncIterator[bytes]:
        """The upload's pieces in order, a few at a time."""
        pieces = prefix_range(f"{upload_id}:")
        cursor = self._uploads.find({"_id": pieces}, batch_size=4).sort("_id", ASCENDING)
        async for document in cursor.hint("_id_"):
            yield bytes(document["data"])

    def _entries(self, job: ImportJob) -> list[Document]:
        """The outbox entries of the job's events, and of the commands it must send."""
        events = outbox_entries(
            job.take_events(), account_id=job.account_id, settings=self._settings
        )
        topic = self._settings.topic_contacts_commands
        commands = [command_entry(c, topic=topic, key=c.partition_key) for c in job.take_commands()]
        return events + commands

    async def add(self, job: ImportJob) -> None:
        entries = self._entries(job)
        await self._imports.insert_one(
            {"_id": job.id, **_document(job), UPLOAD_KEPT: True, OUTBOX: entries}
        )
        self._events_queued(job.id, entries)

    async def get(self, import_id: str) -> ImportJob | None:
        document = await self._imports.find_one({"_id": import_id}, {OUTBOX: 0})
        return _job(document) if document else None

    async def save(self, job: ImportJob, *, expected_version: int) -> None:
        """Write the import and its events if it is still at `expected_version`; else raise
        StaleDocument (read again, change again)."""
        job.version = max(job.version, expected_version + 1)
        entries = self._entries(job)
        applied = await update_if(
            self._imports,
            job.id,
            {"version": expected_version},
            {**(outbox_update(entries) if entries else {}), "$set": _document(job)},
        )
        if not applied:
            raise StaleDocument(job.id)
        if entries:
            self._events_queued(job.id)

    async def claim(self, owner: str, now: datetime, lease: timedelta) -> ImportJob | None:
        """An unfinished import still being sent whose lease is free or expired, now held by
        `owner` until `now + lease`."""
        document = await self._imports.find_one_and_update(
            {
                "status": {"$in": UNFINISHED},
                "sending_done": False,
                "$or": [{"lease": None}, {"lease.until": {"$lt": now}}],
            },
            {"$set": {"lease": {"owner": owner, "until": now + lease}}, "$inc": {"version": 1}},
            {OUTBOX: 0},
            sort=[("created_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return _job(document) if document else None
