"""import-svc storage: imports (one document each: options, status, checkpoint, counts),
their uploads in GridFS, and the refused rows. Each import has two writers that never touch
the same fields: the worker holding its lease (status, checkpoint) and the results consumer
owning its partition of `imports.results` (watermarks and outcome counts)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from gridfs.asynchronous import AsyncGridFSBucket
from pymongo import ASCENDING, IndexModel, ReturnDocument

from contacts_shared.commands import ImportAction, RowOutcome
from contacts_shared.mongo import Collection, Database, Document, ensure_indexes, update_each
from contacts_shared.values import DateOrder
from import_svc.domain import Progress

UPLOAD_CHUNK_BYTES = 1024 * 1024


class ImportStatus(StrEnum):
    QUEUED = "queued"
    VALIDATING = "validating"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"


UNFINISHED = [s.value for s in (ImportStatus.QUEUED, ImportStatus.VALIDATING, ImportStatus.RUNNING)]


@dataclass(frozen=True)
class ReadOptions:
    """How to read the upload and match its columns."""

    delimiter: str | None = None
    encoding: str | None = None
    date_order: DateOrder = DateOrder.DAY_FIRST
    mapping: dict[str, str] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class Checkpoint:
    """Rows whose commands Kafka has acknowledged: up to `line`, with what was read and
    refused up to there, and the rows sent per partition."""

    line: int = 0
    rows_read: int = 0
    refused: int = 0
    sent: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportJob:
    id: str
    account_id: str
    profile_id: str
    action: ImportAction
    reference: str | None
    file_name: str | None
    size: int
    upload_id: Any
    options: ReadOptions
    status: ImportStatus
    created_at: datetime
    checkpoint: Checkpoint
    sending_done: bool
    progress: Progress
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    problems: tuple[dict[str, str], ...] = ()
    header: tuple[str, ...] = ()
    loose_matches: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RefusedRow:
    line: int
    values: list[str]
    problems: list[dict[str, str]]  # column, value, reason


def _partitions(stored: Mapping[str, int]) -> dict[int, int]:
    return {int(p): n for p, n in stored.items()}


def _job(document: Document) -> ImportJob:
    options = document["options"]
    checkpoint = document["checkpoint"]
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
    )


def _stored_partitions(counts: Mapping[int, int]) -> dict[str, int]:
    return {str(p): n for p, n in counts.items()}  # stored keys are strings


class ImportStore:
    def __init__(self, database: Database) -> None:
        self._imports: Collection = database["imports"]
        self._refused: Collection = database["refused_rows"]
        self._uploads = AsyncGridFSBucket(database, bucket_name="uploads")

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._imports,
            [
                IndexModel([("status", ASCENDING)], name="by_status"),
                IndexModel([("account_id", ASCENDING), ("created_at", ASCENDING)], name="newest"),
            ],
        )
        # Refused rows need none: `_id` is `import id:line number`, read in that order.

    async def store_upload(self, name: str, chunks: AsyncIterator[bytes]) -> tuple[Any, int]:
        """Stream an upload into GridFS; its id and size."""
        size = 0
        async with self._uploads.open_upload_stream(name) as stream:
            async for chunk in chunks:
                size += len(chunk)
                await stream.write(chunk)
        return stream._id, size

    async def read_upload(self, upload_id: Any) -> AsyncIterator[bytes]:
        stream = await self._uploads.open_download_stream(upload_id)
        while chunk := await stream.readchunk():
            yield chunk

    async def add(self, job: ImportJob) -> None:
        options = job.options
        await self._imports.insert_one(
            {
                "_id": job.id,
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
                "checkpoint": {"line": 0, "rows_read": 0, "refused": 0, "sent": {}},
                "sending_done": False,
                "counted": {},
                "outcomes": {},
                "lease": None,
            }
        )

    async def get(self, import_id: str) -> ImportJob | None:
        document = await self._imports.find_one({"_id": import_id})
        return _job(document) if document else None

    async def claim(self, owner: str, now: datetime, lease: timedelta) -> ImportJob | None:
        """An unfinished import still being sent whose lease is free or expired, now held by
        `owner` until `now + lease`."""
        document = await self._imports.find_one_and_update(
            {
                "status": {"$in": UNFINISHED},
                "sending_done": False,
                "$or": [{"lease": None}, {"lease.until": {"$lt": now}}],
            },
            {"$set": {"lease": {"owner": owner, "until": now + lease}}},
            sort=[("created_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return _job(document) if document else None

    async def hold(
        self,
        import_id: str,
        owner: str,
        until: datetime,
        changes: Mapping[str, Any],
    ) -> bool:
        """Renew `owner`'s lease and write `changes`, unless the import was cancelled or
        another worker took it over; False then (the worker stops)."""
        result = await self._imports.update_one(
            {"_id": import_id, "lease.owner": owner, "status": {"$in": UNFINISHED}},
            {"$set": {"lease.until": until, **changes}},
        )
        return result.matched_count == 1

    async def checkpoint(
        self, import_id: str, owner: str, until: datetime, checkpoint: Checkpoint, *, done: bool
    ) -> bool:
        return await self.hold(
            import_id,
            owner,
            until,
            {
                "checkpoint": {
                    "line": checkpoint.line,
                    "rows_read": checkpoint.rows_read,
                    "refused": checkpoint.refused,
                    "sent": _stored_partitions(checkpoint.sent),
                },
                "sending_done": done,
            },
        )

    async def refuse(self, import_id: str, rows: Sequence[RefusedRow]) -> None:
        """Record refused rows; recording one again changes nothing."""
        await update_each(
            self._refused,
            [
                (
                    f"{import_id}:{row.line:012d}",
                    {
                        "$set": {
                            "import_id": import_id,
                            "line": row.line,
                            "values": row.values,
                            "problems": row.problems,
                        }
                    },
                )
                for row in rows
            ],
            upsert=True,
        )

    async def refused_rows(self, import_id: str) -> AsyncIterator[RefusedRow]:
        """The refused rows in line order, streamed."""
        ids = {"$gte": f"{import_id}:", "$lt": f"{import_id};"}
        async for document in self._refused.find({"_id": ids}).sort("_id", ASCENDING):
            yield RefusedRow(document["line"], document["values"], document["problems"])

    async def fold(
        self, import_id: str, partition: int, rows: Sequence[tuple[int, int, RowOutcome]]
    ) -> ImportJob | None:
        """Count contact-svc's outcomes beyond the partition's watermark (this consumer alone
        writes them); the import after, or None if it is unknown."""
        job = await self.get(import_id)
        if job is None:
            return None
        if job.progress.fold(partition, rows):
            await self._imports.update_one(
                {"_id": import_id},
                {
                    "$set": {
                        f"counted.{partition}": job.progress.counted[partition],
                        "outcomes": dict(job.progress.outcomes),
                    }
                },
            )
        return job

    async def finish(
        self, import_id: str, status: ImportStatus, now: datetime, **details: Any
    ) -> bool:
        """Set a final status once; False if the import had finished already."""
        result = await self._imports.update_one(
            {"_id": import_id, "status": {"$in": UNFINISHED}},
            {"$set": {"status": status.value, "finished_at": now, "lease": None, **details}},
        )
        return result.modified_count == 1
