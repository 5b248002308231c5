"""Domain events and their CloudEvents 1.0 envelope: the contract between the services.

Each event type is one frozen pydantic model registered under a stable `type` string; the
event catalogue in docs/ is generated from this registry (`python -m contacts_shared.catalogue`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from contacts_shared.commands import ImportAction
from contacts_shared.schema import (
    ContactSnapshot,
    ContactStatus,
    FieldSpec,
    ProfileSnapshot,
    ProfileType,
)


class EventEnvelope(BaseModel):
    """CloudEvents 1.0 structured JSON, with `accountid` and `dataversion` extensions."""

    model_config = ConfigDict(frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str
    datacontenttype: Literal["application/json"] = "application/json"
    accountid: str
    dataversion: str
    data: dict[str, Any]


class DomainEvent(BaseModel):
    """Base of every event payload. Subclasses set `event_type`, `topic` and `data_version`."""

    model_config = ConfigDict(frozen=True)

    event_type: ClassVar[str]
    # Name of the topic setting (a field of ServiceSettings) the event is published on.
    topic: ClassVar[str]
    data_version: ClassVar[int] = 1

    def subject(self) -> str:
        """The aggregate the event is about; also the Kafka message key."""
        raise NotImplementedError


EVENT_TYPES: dict[str, type[DomainEvent]] = {}
E = TypeVar("E", bound=type[DomainEvent])


def register(event_type: str, topic: str) -> Callable[[E], E]:
    """Class decorator: give an event model its stable type string and topic."""

    def decorate(cls: E) -> E:
        if event_type in EVENT_TYPES:
            raise ValueError(f"event type {event_type!r} registered twice")
        cls.event_type = event_type
        cls.topic = topic
        EVENT_TYPES[event_type] = cls
        return cls

    return decorate


def to_envelope(
    event: DomainEvent, *, account_id: str, source: str, event_id: str | None = None
) -> EventEnvelope:
    """The event in its envelope; `event_id` for an event whose id is derived from what it says
    (so a copy published again carries it), else a new one."""
    return EventEnvelope(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=event.event_type,
        time=datetime.now(UTC),
        subject=event.subject(),
        accountid=account_id,
        dataversion=str(event.data_version),
        data=event.model_dump(mode="json"),
    )


class UnknownEventType(ValueError):
    pass


def parse_event(envelope: EventEnvelope) -> DomainEvent:
    """The typed payload of an envelope."""
    cls = EVENT_TYPES.get(envelope.type)
    if cls is None:
        raise UnknownEventType(envelope.type)
    return cls.model_validate(envelope.data)


def event_of(value: bytes | None) -> tuple[EventEnvelope, DomainEvent] | None:
    """A Kafka record value's envelope and typed event; None for a type this version does not
    know (a newer producer's), which carries nothing this version needs."""
    envelope = EventEnvelope.model_validate_json(value or b"")
    try:
        return envelope, parse_event(envelope)
    except UnknownEventType:
        return None


# -- profile events (published by profile-svc on `profiles.events`, keyed by profile id) --------

PROFILES = "topic_profiles_events"


class ProfileEvent(DomainEvent):
    profile: ProfileSnapshot

    def subject(self) -> str:
        return self.profile.id


@register("contacts.profile.created", PROFILES)
class ProfileCreated(ProfileEvent):
    """A profile was created; carries it whole."""


@register("contacts.profile.updated", PROFILES)
class ProfileUpdated(ProfileEvent):
    """A profile's name or description changed."""

    changed: tuple[str, ...] = Field(description="names of the attributes that changed")


@register("contacts.profile.field_added", PROFILES)
class ProfileFieldAdded(ProfileEvent):
    """A field was added to a profile."""

    field: FieldSpec


@register("contacts.profile.field_removed", PROFILES)
class ProfileFieldRemoved(ProfileEvent):
    """A field was removed from a profile; its values are to be dropped."""

    field: FieldSpec


@register("contacts.profile.rules_changed", PROFILES)
class VirtualProfileRulesChanged(ProfileEvent):
    """A virtual profile's rules changed; its membership is to be rebuilt."""


@register("contacts.profile.deleted", PROFILES)
class ProfileDeleted(DomainEvent):
    """A profile was deleted; its contacts and segment memberships go with it."""

    profile_id: str
    type: ProfileType
    version: int

    def subject(self) -> str:
        return self.profile_id


# -- contact events (published by contact-svc on `contacts.events`, keyed `profile_id:key`) ----

CONTACTS = "topic_contacts_events"


class ContactEvent(DomainEvent):
    contact: ContactSnapshot

    def subject(self) -> str:
        return self.contact.id


@register("contacts.contact.created", CONTACTS)
class ContactCreated(ContactEvent):
    """A contact was added to a profile; carries it whole."""


@register("contacts.contact.updated", CONTACTS)
class ContactUpdated(ContactEvent):
    """A contact's field values changed; `changed` names the field keys."""

    changed: tuple[str, ...]


@register("contacts.contact.status_changed", CONTACTS)
class ContactStatusChanged(ContactEvent):
    """A contact's status changed (unsubscribed, bounced, re-activated, ...)."""

    previous_status: ContactStatus


@register("contacts.contact.imported", CONTACTS)
class ContactImported(ContactEvent):
    """An import created or changed a contact: told once, in place of the created, updated or
    status-changed events of that change. `line` is the row that last changed it."""

    import_id: str
    action: ImportAction
    line: int
    created: bool
    changed: tuple[str, ...] = Field(description="field keys changed, and `status` if it did")
    previous_status: ContactStatus | None = Field(
        description="the status before, when the import changed that of an existing contact"
    )


@register("contacts.contact.deleted", CONTACTS)
class ContactDeleted(DomainEvent):
    """A contact was removed from its profile."""

    contact_id: str
    account_id: str
    profile_id: str
    key: str
    version: int
    status: ContactStatus = Field(description="its status when deleted")
    created_at: datetime = Field(description="when it was added, so per-day counts can follow")
    source: str | None = Field(
        default=None, description="what deleted it (api, import:<id>, profile-deleted)"
    )
    erased: bool = Field(
        default=False,
        description="erased at the person's request (a store's GDPR redact): consumers drop "
        "what they kept of the contact, its history too",
    )

    def subject(self) -> str:
        return self.contact_id


# -- import events (published by import-svc on `imports.events`, keyed by import id) -----------

IMPORTS = "topic_imports_events"


class ImportSnapshot(BaseModel):
    """An import as it stands after a change; `version` grows with every change."""

    model_config = ConfigDict(frozen=True)

    id: str
    account_id: str
    profile_id: str
    action: ImportAction
    reference: str | None
    file_name: str | None
    size: int
    status: str = Field(
        description="queued, validating, running, completed, completed_with_errors, failed, "
        "cancelled"
    )
    counts: dict[str, int] = Field(
        description="read, refused, applied, and per outcome: created, updated, unchanged, "
        "unsubscribed, duplicate, not_found, profile_gone; deleted (by an overwrite)"
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    problems: list[dict[str, str]] = Field(description="the header's problems, by column")
    header: list[str] = Field(
        default_factory=list, description="the file's columns as uploaded, once read"
    )
    version: int


class ImportEvent(DomainEvent):
    job: ImportSnapshot = Field(alias="import")

    model_config = ConfigDict(frozen=True, populate_by_name=True, serialize_by_alias=True)

    def subject(self) -> str:
        return self.job.id


@register("contacts.import.queued", IMPORTS)
class ImportQueued(ImportEvent):
    """An upload was stored and its import waits for a worker."""


@register("contacts.import.started", IMPORTS)
class ImportStarted(ImportEvent):
    """A worker began reading the import's file."""


@register("contacts.import.progressed", IMPORTS)
class ImportProgressed(ImportEvent):
    """More of the import's rows have their outcome (told at most once a second)."""


@register("contacts.import.completed", IMPORTS)
class ImportCompleted(ImportEvent):
    """Every row has its outcome (`completed_with_errors` when some were refused)."""


@register("contacts.import.failed", IMPORTS)
class ImportFailed(ImportEvent):
    """The import stopped: its file or header cannot be used, or its profile is gone."""


@register("contacts.import.cancelled", IMPORTS)
class ImportCancelled(ImportEvent):
    """The user stopped the import; rows already applied stay."""


class RefusedRow(BaseModel):
    model_config = ConfigDict(frozen=True)

    line: int = Field(description="its line in the file (1: the header)")
    values: list[str] = Field(description="its cells as uploaded, for fixing and importing again")
    problems: list[dict[str, str]] = Field(description="column, value and reason of each")


@register("contacts.import.rows_refused", IMPORTS)
class ImportRowsRefused(DomainEvent):
    """Rows of an import refused before anything was sent, with their reasons, told before
    the import's checkpoint passes them (so a resumed import may tell some again: a row is
    known by its import and line)."""

    import_id: str
    profile_id: str
    rows: list[RefusedRow]

    def subject(self) -> str:
        return self.import_id


# -- segment events (published by segment-svc on `segments.events`) ---------------------------

SEGMENTS = "topic_segments_events"


class MembershipEvent(DomainEvent):
    """Keyed by the contact (`profile_id:key` of its base profile), so one contact's membership
    events stay in order; `contact_version` is the contact version that caused the change."""

    segment_id: str = Field(description="the virtual profile's id")
    base_profile_id: str
    contact_id: str
    key: str
    contact_version: int
    status: ContactStatus = Field(description="the contact's status at that version")
    sequence: int = Field(
        description="grows with each change of the contact's memberships: orders them; an "
        "event published again after a crash carries its first sequence (and id)"
    )

    def subject(self) -> str:
        return self.contact_id


@register("contacts.segment.contact_entered", SEGMENTS)
class ContactEnteredSegment(MembershipEvent):
    """A contact now matches a virtual profile's rules."""

    since: datetime


@register("contacts.segment.contact_left", SEGMENTS)
class ContactLeftSegment(MembershipEvent):
    """A contact no longer matches a virtual profile's rules, was deleted, or the virtual
    profile was deleted (`reason`: rules, contact_deleted, segment_deleted)."""

    reason: Literal["rules", "contact_deleted", "segment_deleted"]


@register("contacts.segment.member_status_changed", SEGMENTS)
class SegmentMemberStatusChanged(MembershipEvent):
    """A member's status changed (unsubscribed, bounced, ...) and it is still a member; per-status
    counts of the segment follow it."""

    previous_status: ContactStatus


@register("contacts.segment.rebuilt", SEGMENTS)
class SegmentRebuilt(DomainEvent):
    """A virtual profile's membership was evaluated again over its whole base profile (rules
    created or changed, a field they read removed, or a new day for relative-date rules)."""

    segment_id: str
    base_profile_id: str
    rules_version: int
    reason: str
    checked: int = Field(description="contacts of the base profile evaluated")
    members: int
    entered: int
    left: int
    seconds: float

    def subject(self) -> str:
        return self.segment_id
