"""segment-svc's connections and stores, made once per process."""

from __future__ import annotations

from dataclasses import dataclass

from contacts_shared.journal import EventJournal
from contacts_shared.kafka import EventPublisher
from contacts_shared.mongo import MongoClient, service_client
from contacts_shared.profiles import MongoSchemaStore
from segment_svc.settings import SegmentSettings
from segment_svc.store import (
    ContactProjection,
    MemberCounts,
    Members,
    MembershipRelay,
    SegmentStore,
)


@dataclass
class Resources:
    client: MongoClient
    publisher: EventPublisher
    schemas: MongoSchemaStore
    segments: SegmentStore
    projection: ContactProjection
    members: Members
    journal: EventJournal
    relay: MembershipRelay
    counts: MemberCounts

    @classmethod
    def open(cls, settings: SegmentSettings) -> Resources:
        client = service_client(settings)
        database = client[settings.mongodb_database]
        publisher = EventPublisher.of_service(settings, [settings.topic_segments_events])
        schemas = MongoSchemaStore(database["schemas"])
        projection = ContactProjection(database["contacts"])
        members = Members(database["members"])
        journal = EventJournal(
            database["membership_journal"],
            database["contacts"],
            lease_seconds=settings.journal_lease_seconds,
            apply_records=members.apply,
        )
        return cls(
            client,
            publisher,
            schemas,
            SegmentStore(database["segments"], schemas),
            projection,
            members,
            journal,
            MembershipRelay(projection, members, publisher, journal),
            MemberCounts(database["member_marks"], database["member_shares"]),
        )

    async def create_indexes(self) -> None:
        await self.segments.create_indexes()
        await self.projection.create_indexes()
        await self.members.create_indexes()
        await self.counts.create_indexes()

    async def close(self) -> None:
        await self.publisher.close()
        await self.client.close()
