"""What segment-svc does with its events: project contacts and evaluate their memberships,
keep the virtual profiles' rules, and rebuild a segment over its whole base profile."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import Histogram

from contacts_shared.events import (
    DomainEvent,
    EventEnvelope,
    ProfileDeleted,
    ProfileEvent,
    ProfileFieldAdded,
    ProfileFieldRemoved,
    SegmentRebuilt,
    event_of,
    to_envelope,
)
from contacts_shared.kafka import EventPublisher, Record, event_message
from contacts_shared.mongo import Document, bson_now
from contacts_shared.profiles import MongoSchemaStore, project_profile_event
from contacts_shared.schema import ProfileType
from segment_svc.counts import fold, membership_changes
from segment_svc.evaluate import Segment
from segment_svc.membership import (
    SOURCE,
    ContactState,
    contact_state,
    contact_writes,
    newest_states,
    segment_writes,
)
from segment_svc.store import ContactProjection, MemberCounts, MembershipRelay, SegmentStore

log = logging.getLogger(__name__)

# The rules' evaluation alone (no round trip): a batch of contact events against their
# profiles' segments, or a rebuild's page of contacts against one segment.
EVALUATION = Histogram(
    "contacts_segment_evaluation_seconds",
    "Time to evaluate segment rules for a batch of contacts, by what asked",
    ["trigger"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONTACT_EVENTS, REBUILD = "contact_events", "rebuild"


class Segmenter:
    """Keeps the contact projection and every segment's membership current."""

    def __init__(
        self,
        segments: SegmentStore,
        projection: ContactProjection,
        relay: MembershipRelay,
        *,
        topic: str,
    ) -> None:
        self._segments = segments
        self._projection = projection
        self._relay = relay
        self._topic = topic

    async def apply_contact_records(self, records: Sequence[Record]) -> None:
        """A partition's batch of contact events: each contact's newest state, evaluated
        against its profile's segments. Versions at or below the projected one change
        nothing, so redelivery and replays are harmless."""
        states = []
        for record in records:
            parsed = event_of(record.value)
            if parsed is not None and (state := contact_state(parsed[1], parsed[0].accountid)):
                states.append(state)
        await self.apply_states(list(newest_states(states).values()))

    async def apply_states(self, states: Sequence[ContactState]) -> None:
        pending = {state.contact_id: state for state in states}
        while pending:
            # Documents first, then the segments: a rules change stored after these documents
            # were read is seen by its rebuild, which reads them after this write or loses
            # its race with it and reads again.
            held = await self._projection.load(list(pending))
            segments = await self._segments.of_profiles(
                sorted({s.profile_id for s in pending.values()})
            )
            with EVALUATION.labels(CONTACT_EVENTS).time():
                writes = contact_writes(
                    pending.values(), held, segments, now=bson_now(), topic=self._topic
                )
            lost = await self._relay.write(writes)
            pending = {i: pending[i] for i in lost}


class MemberCounter:
    """Folds membership events into member counts (`segment_svc.counts`)."""

    def __init__(self, counts: MemberCounts) -> None:
        self._counts = counts

    async def apply_records(self, records: Sequence[Record]) -> None:
        """A batch of `segments.events`, each partition's records in offset order: every
        partition's share folded apart, all read and written in one set of round trips."""
        partitions: dict[int, list[Record]] = {}
        for record in records:
            partitions.setdefault(record.partition, []).append(record)
        changes = {p: membership_changes(batch) for p, batch in partitions.items()}
        keys = {(c.segment_id, c.contact_id) for batch in changes.values() for c in batch}
        if not keys:
            return
        marks = await self._counts.marks_of(sorted(keys))
        counted_to = await self._counts.counted_to(
            {(c.segment_id, p) for p, batch in changes.items() for c in batch}
        )
        await self._counts.record(
            [
                fold(
                    partition,
                    batch,
                    marks,
                    {s: offset for (s, p), offset in counted_to.items() if p == partition},
                    partitions[partition][-1].offset,
                )
                for partition, batch in changes.items()
                if batch
            ],
            stored=marks.keys(),
        )


class ProfileProjector:
    """Profile events: base profiles' fields (what rules read) and virtual profiles' rules."""

    def __init__(self, schemas: MongoSchemaStore, segments: SegmentStore) -> None:
        self._schemas = schemas
        self._segments = segments

    async def apply_record(self, record: Record) -> None:
        parsed = event_of(record.value)
        if parsed is not None:
            await self.apply(*parsed)

    async def apply(self, envelope: EventEnvelope, event: DomainEvent) -> None:
        await project_profile_event(envelope, event, self._schemas)
        if isinstance(event, ProfileDeleted):
            if event.type is ProfileType.VIRTUAL:
                await self._segments.delete(event.profile_id, event.version)
        elif isinstance(event, ProfileEvent) and event.profile.type is ProfileType.VIRTUAL:
            await self._segments.apply_virtual(event.profile)
        elif isinstance(event, ProfileFieldRemoved | ProfileFieldAdded):
            # Rules naming a field that went (or came back) hold for other contacts now.
            reason = "field_removed" if isinstance(event, ProfileFieldRemoved) else "field_added"
            await self._segments.request_rebuild(event.profile.id, event.field.name, reason)


class Rebuilder:
    """Evaluates one segment over every contact of its base profile, in `_id` order, with its
    progress checkpointed so another worker (or this one, restarted) carries it on."""

    def __init__(
        self,
        segments: SegmentStore,
        projection: ContactProjection,
        relay: MembershipRelay,
        publisher: EventPublisher,
        *,
        topic: str,
        owner: str,
        page_size: int = 500,
        pages_in_flight: int = 4,
        lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self._segments = segments
        self._projection = projection
        self._relay = relay
        self._publisher = publisher
        self._topic = topic
        self._owner = owner
        self._page_size = page_size
        self._pages_in_flight = pages_in_flight
        self._lease = lease

    async def run_one(self) -> bool:
        """Rebuild one pending segment, if any; whether there was one."""
        claimed = await self._segments.claim_rebuild(self._owner, self._lease)
        if claimed is None:
            return False
        await self._rebuild(claimed)
        return True

    async def _rebuild(self, document: Document) -> None:
        started = time.monotonic()
        segment = await self._segments.segment(document)
        deleted = bool(document.get("deleted"))
        request = document["rebuild"]["request"]
        progress: dict[str, Any] = document["rebuild"].get("progress") or {}
        if progress.get("request") != request:
            progress = {"request": request, "after": None, "checked": 0, "entered": 0, "left": 0}
        # Pages are read in order and evaluated a few at a time (their contacts are distinct,
        # and every write is conditional): the server's round trips overlap. Progress is
        # checkpointed in page order, so a resumed rebuild skips only pages done.
        window: deque[tuple[str, int, asyncio.Task[tuple[int, int]]]] = deque()
        after = progress["after"]
        try:
            while True:
                page = await self._projection.page(segment.base_profile_id, after, self._page_size)
                if page:
                    after = page[-1]["_id"]
                    task = asyncio.create_task(self._evaluate_page(segment, page, deleted))
                    window.append((after, len(page), task))
                while window and (len(window) >= self._pages_in_flight or not page):
                    last_id, checked, oldest = window.popleft()
                    entered, left = await oldest
                    progress["after"] = last_id
                    progress["checked"] += checked
                    progress["entered"] += entered
                    progress["left"] += left
                    held = await self._segments.checkpoint(
                        segment.id, self._owner, self._lease, {"progress": progress}
                    )
                    if held is None:
                        return  # another worker took the rebuild over (our lease ran out)
                    if held["rebuild"]["request"] != request and not held.get("deleted"):
                        # The rules changed again: start over with the new ones.
                        return await self._rebuild(held)
                if not page:
                    break
        finally:
            for _, _, task in window:
                task.cancel()
        members = sum((await self._relay.members.counts(segment.id)).values())
        outcome = {
            "request": request,
            "reason": document["rebuild"].get("reason"),
            "rules_version": segment.rules_version,
            "checked": progress["checked"],
            "members": members,
            "entered": progress["entered"],
            "left": progress["left"],
            "seconds": round(time.monotonic() - started, 3),
            "finished_at": bson_now(),
        }
        await self._publish_rebuilt(segment, outcome)
        await self._segments.finish_rebuild(
            segment.id, self._owner, request, outcome, evaluated_on=bson_now().date().isoformat()
        )

    async def _evaluate_page(
        self, segment: Segment, page: list[Document], deleted: bool
    ) -> tuple[int, int]:
        """Evaluate the segment for each contact of the page; (entered, left)."""
        entered = left = 0
        documents = {d["_id"]: d for d in page}
        while documents:
            with EVALUATION.labels(REBUILD).time():
                writes = segment_writes(
                    segment, documents.values(), deleted=deleted, now=bson_now(), topic=self._topic
                )
            lost = await self._relay.write(writes)
            for _, fields, entries in writes:
                if fields["_id"] not in lost:
                    entered += sum(1 for e in entries if e.get("kind") == "entered")
                    left += sum(1 for e in entries if e.get("kind") == "left")
            documents = await self._projection.load(sorted(lost))
        return entered, left

    async def _publish_rebuilt(self, segment: Segment, outcome: dict[str, Any]) -> None:
        event = SegmentRebuilt(
            segment_id=segment.id,
            base_profile_id=segment.base_profile_id,
            rules_version=segment.rules_version,
            reason=str(outcome["reason"]),
            checked=outcome["checked"],
            members=outcome["members"],
            entered=outcome["entered"],
            left=outcome["left"],
            seconds=outcome["seconds"],
        )
        envelope = to_envelope(event, account_id=segment.account_id, source=SOURCE)
        await self._publisher.publish(
            [event_message(self._topic, envelope.subject, envelope.model_dump_json().encode())]
        )
