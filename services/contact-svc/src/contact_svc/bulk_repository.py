"""Bulk action jobs in MongoDB, one document each (ADR 18). Its two writers touch separate
fields: the sender, only while it holds the lease, its selection's progress; the command
consumer, one conditional increment per page counted. Completion is a conditional change of
state that either may make."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument

from contact_svc.bulk_jobs import BulkJob, BulkState, PendingPage
from contact_svc.listing_handlers import ContactFilter
from contacts_shared.commands import BulkAction, BulkOutcome
from contacts_shared.mongo import Collection, Document, ensure_indexes
from contacts_shared.schema import ContactStatus

RESUMABLE = [BulkState.QUEUED.value, BulkState.SENDING.value]


def _by_partition(stored: Mapping[str, int]) -> dict[int, int]:
    return {int(partition): page for partition, page in stored.items()}


def _filter(stored: Document) -> ContactFilter:
    status = stored.get("status")
    return ContactFilter(**{**stored, "status": ContactStatus(status) if status else None})


def _job(document: Document) -> BulkJob:
    lease = document.get("lease") or {}
    pending = document.get("pending")
    selection = document.get("filter")
    return BulkJob(
        id=document["_id"],
        account_id=document["account_id"],
        profile_id=document["profile_id"],
        action=BulkAction(document["action"]),
        created_at=document["created_at"],
        total=document["total"],
        status=ContactStatus(document["status"]) if document.get("status") else None,
        reason=document.get("reason"),
        keys=tuple(document["keys"]) if document.get("keys") is not None else None,
        filter=_filter(selection) if selection is not None else None,
        state=BulkState(document["state"]),
        started_at=document.get("started_at"),
        finished_at=document.get("finished_at"),
        error=document.get("error"),
        after_key=document.get("after_key"),
        pending=PendingPage(pending["number"], tuple(pending["keys"])) if pending else None,
        pages=document.get("pages", 0),
        sent_to=_by_partition(document.get("sent_to") or {}),
        selected=document.get("selected", 0),
        counted=_by_partition(document.get("counted") or {}),
        counts={BulkOutcome(o): n for o, n in (document.get("counts") or {}).items()},
        lease_owner=lease.get("owner"),
        lease_until=lease.get("until"),
    )


def _sender_fields(job: BulkJob) -> Document:
    """What the sender writes: its progress through the selection."""
    return {
        "state": job.state.value,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "error": job.error,
        "after_key": job.after_key,
        "pending": asdict(job.pending) if job.pending else None,
        "pages": job.pages,
        "sent_to": {str(partition): page for partition, page in job.sent_to.items()},
        "selected": job.selected,
    }


class MongoBulkJobStore:
    def __init__(self, collection: Collection) -> None:
        self._jobs = collection

    async def create_indexes(self) -> None:
        await ensure_indexes(
            self._jobs,
            [
                IndexModel([("state", ASCENDING)], name="state_1"),
                IndexModel(
                    [("profile_id", ASCENDING), ("created_at", DESCENDING)],
                    name="profile_id_1_created_at_-1",
                ),
            ],
        )

    async def add(self, job: BulkJob) -> None:
        await self._jobs.insert_one(
            {
                "_id": job.id,
                "account_id": job.account_id,
                "profile_id": job.profile_id,
                "action": job.action.value,
                "created_at": job.created_at,
                "total": job.total,
                "status": job.status.value if job.status else None,
                "reason": job.reason,
                "keys": list(job.keys) if job.keys is not None else None,
                "filter": asdict(job.filter) if job.filter is not None else None,
                "counted": {},
                "counts": {},
                "lease": None,
                **_sender_fields(job),
            }
        )

    async def get(self, job_id: str) -> BulkJob | None:
        document = await self._jobs.find_one({"_id": job_id}, {"keys": 0})
        return _job(document) if document else None

    async def of_profile(self, profile_id: str, limit: int) -> list[BulkJob]:
        """The profile's jobs, newest first."""
        found = self._jobs.find({"profile_id": profile_id}, {"keys": 0})
        return [_job(d) async for d in found.sort("created_at", DESCENDING).limit(limit)]

    async def claim(self, owner: str, now: datetime, lease: timedelta) -> BulkJob | None:
        """A job still being sent whose lease is free, expired or `owner`'s own (its work
        stopped by a failure), now held by `owner`."""
        document = await self._jobs.find_one_and_update(
            {
                "state": {"$in": RESUMABLE},
                "$or": [{"lease": None}, {"lease.until": {"$lt": now}}, {"lease.owner": owner}],
            },
            {"$set": {"lease": {"owner": owner, "until": now + lease}}},
            sort=[("created_at", ASCENDING)],
            return_document=ReturnDocument.AFTER,
        )
        return _job(document) if document else None

    async def hold(self, job: BulkJob, owner: str, until: datetime) -> bool:
        """Write the sender's progress and renew its lease, if `owner` still holds it."""
        result = await self._jobs.update_one(
            {"_id": job.id, "lease.owner": owner},
            {"$set": {**_sender_fields(job), "lease.until": until}},
        )
        return result.matched_count == 1

    async def counted_pages(self, job_ids: Sequence[str], partition: int) -> dict[str, int]:
        """The last page counted in `partition`, by job (0: none)."""
        found = self._jobs.find({"_id": {"$in": list(job_ids)}}, {f"counted.{partition}": 1})
        return {d["_id"]: (d.get("counted") or {}).get(str(partition), 0) async for d in found}

    async def count_page(
        self, job_id: str, partition: int, page: int, outcomes: Mapping[BulkOutcome, int]
    ) -> BulkJob | None:
        """Add a page's outcomes, unless that partition has counted it (or a later page)
        already; the job as counted, or None if it was a copy."""
        mark = f"counted.{partition}"
        increments: dict[str, Any] = {f"counts.{o.value}": n for o, n in outcomes.items() if n}
        document = await self._jobs.find_one_and_update(
            {"_id": job_id, "$or": [{mark: {"$lt": page}}, {mark: {"$exists": False}}]},
            {"$set": {mark: page}, **({"$inc": increments} if increments else {})},
            {"keys": 0},
            return_document=ReturnDocument.AFTER,
        )
        return _job(document) if document else None

    async def complete(self, job_id: str, now: datetime) -> None:
        """Mark the job completed, once it is applying (whichever writer sees it done)."""
        await self._jobs.update_one(
            {"_id": job_id, "state": BulkState.APPLYING.value},
            {"$set": {"state": BulkState.COMPLETED.value, "finished_at": now, "lease": None}},
        )
