"""Contacts: identity, typed field values, statuses and their events. Pure: no I/O."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from contacts_shared.commands import (
    BulkAction,
    BulkChange,
    BulkOutcome,
    ImportAction,
    ImportContact,
    RowOutcome,
)
from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactImported,
    ContactStatusChanged,
    ContactUpdated,
    DomainEvent,
)
from contacts_shared.profiles import ProfileSchema
from contacts_shared.schema import (
    ContactSnapshot,
    ContactStatus,
)
from contacts_shared.values import (
    FieldProblem,
    ValuesInvalid,
)


class ContactError(Exception):
    """Base of the contact rules' refusals."""


class ContactExists(ContactError):
    """`field`: the identity field's name, the input a form shows the refusal at."""

    def __init__(self, key: str, field: str) -> None:
        super().__init__(f"contact {key} already exists in this profile")
        self.field = field


class ContactNotFound(ContactError):
    def __init__(self, key: str) -> None:
        super().__init__(f"contact {key} does not exist in this profile")


class ProfileUnknown(ContactError):
    """The profile is not (yet) in contact-svc's projection of profile events."""

    def __init__(self, profile_id: str) -> None:
        super().__init__(
            f"profile {profile_id} is not known to contact-svc (unknown, deleted, or created "
            "an instant ago and not yet received: retry shortly)"
        )


# Statuses that follow an email or phone into every profile of the account.
SUPPRESSING = frozenset(
    {ContactStatus.UNSUBSCRIBED, ContactStatus.BOUNCED, ContactStatus.COMPLAINED}
)


@dataclass(frozen=True)
class Suppression:
    """An email or phone unsubscribed, bounced or complained somewhere in the account: added
    to any other profile, it arrives with that status, not active. Only a manual re-activation
    through the API lifts it."""

    account_id: str
    key: str
    status: ContactStatus
    profile_id: str
    at: datetime

    def reason(self) -> str:
        return f"{self.status.value} in profile {self.profile_id} (account-wide suppression)"


@dataclass(frozen=True)
class SuppressionLifted:
    """An explicit re-activation: the email or phone may arrive active again."""

    account_id: str
    key: str
    at: datetime


# Where a status that follows an email or phone from elsewhere in the account says it came from.
SUPPRESSION_SOURCE = "suppression"
# The source of a change asked for through the API: only there is a re-activation explicit.
API_SOURCE = "api"


def suppression_told(event: DomainEvent) -> Suppression | SuppressionLifted | None:
    """What a contact event says of the account-wide suppression list: a contact that becomes
    unsubscribed, bounced or complained suppresses its email or phone in the account; one
    re-activated through the API lifts it; a status that came from the list itself, or a
    change of values only, says nothing."""
    if isinstance(event, ContactImported) and not (event.created or event.previous_status):
        return None
    if not isinstance(event, ContactCreated | ContactStatusChanged | ContactImported):
        return None
    contact = event.contact
    if contact.status_source == SUPPRESSION_SOURCE:
        return None
    if contact.status in SUPPRESSING:
        return Suppression(
            account_id=contact.account_id,
            key=contact.key,
            status=contact.status,
            profile_id=contact.profile_id,
            at=contact.status_changed_at,
        )
    if (
        isinstance(event, ContactStatusChanged)
        and contact.status is ContactStatus.ACTIVE
        and contact.status_source == API_SOURCE
    ):
        return SuppressionLifted(contact.account_id, contact.key, contact.status_changed_at)
    return None


def contact_id(profile_id: str, key: str) -> str:
    return f"{profile_id}:{key}"


# -- contacts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportStamp:
    """The rows of one import that wrote a contact: the first and the last, with what each
    did. A redelivered row finds itself here and repeats its outcome; a later row of the same
    import is a duplicate key (ADR 10)."""

    import_id: str
    first_line: int
    first_outcome: RowOutcome
    line: int
    outcome: RowOutcome

    def outcome_of(self, line: int) -> RowOutcome | None:
        """The outcome a row of this import at `line` had, if it was applied already."""
        if line < self.first_line:
            return RowOutcome.UNCHANGED  # applied before any row wrote: it changed nothing
        if line == self.first_line:
            return self.first_outcome
        if line < self.line:
            return RowOutcome.DUPLICATE
        if line == self.line:
            return self.outcome
        return None


@dataclass(frozen=True)
class BulkStamp:
    """The bulk action that last changed a contact, and what it did: its page applied again
    (a redelivery) repeats the outcome and writes nothing (ADR 18)."""

    job_id: str
    outcome: BulkOutcome


@dataclass
class Contact:
    account_id: str
    profile_id: str
    key: str
    fields: dict[str, Any]
    status: ContactStatus
    status_source: str
    status_changed_at: datetime
    source: str
    created_at: datetime
    updated_at: datetime
    status_reason: str | None = None
    version: int = 1
    deleted: bool = False
    erased: bool = False  # deleted at the person's request: nothing but its key is kept
    imported: ImportStamp | None = None
    bulk: BulkStamp | None = None
    events: list[DomainEvent] = field(default_factory=list, compare=False)

    @property
    def id(self) -> str:
        return contact_id(self.profile_id, self.key)

    @classmethod
    def create(
        cls,
        *,
        schema: ProfileSchema,
        key: str,
        values: dict[str, Any],
        source: str,
        now: datetime,
        status: ContactStatus = ContactStatus.ACTIVE,
        status_reason: str | None = None,
        status_source: str | None = None,
        version: int = 1,
    ) -> Contact:
        """A new contact; `values` are by field key, already converted. A contact added again
        after a deletion continues its version sequence (`version` = the deleted one's + 1)."""
        fields = {k: v for k, v in values.items() if v is not None}
        fields[schema.identity.key] = key
        contact = cls(
            account_id=schema.account_id,
            profile_id=schema.profile_id,
            key=key,
            fields=fields,
            status=status,
            status_reason=status_reason,
            status_source=status_source or source,
            status_changed_at=now,
            source=source,
            created_at=now,
            updated_at=now,
            version=version,
        )
        contact.events.append(ContactCreated(contact=contact.snapshot()))
        return contact

    def _bump(self, now: datetime, source: str) -> None:
        self.version += 1
        self.updated_at = now
        self.source = source

    def set_values(
        self,
        values: dict[str, Any],
        *,
        schema: ProfileSchema,
        replace_all: bool,
        source: str,
        now: datetime,
    ) -> tuple[str, ...]:
        """Change field values (all of them when `replace_all`); the keys that changed."""
        identity = schema.identity.key
        new = dict(values) if replace_all else {**self.fields, **values}
        new[identity] = self.key
        new = {k: v for k, v in new.items() if v is not None}
        changed = tuple(
            sorted(k for k in new.keys() | self.fields.keys() if new.get(k) != self.fields.get(k))
        )
        if changed:
            self.fields = new
            self._bump(now, source)
            self.events.append(ContactUpdated(contact=self.snapshot(), changed=changed))
        return changed

    def change_status(
        self, status: ContactStatus, *, reason: str | None, source: str, now: datetime
    ) -> bool:
        """Set the status; False when it already was that."""
        if status is self.status:
            return False
        previous = self.status
        self.status, self.status_reason = status, reason
        self.status_source, self.status_changed_at = source, now
        self._bump(now, source)
        self.events.append(ContactStatusChanged(contact=self.snapshot(), previous_status=previous))
        return True

    def delete(self, *, source: str, now: datetime, erase: bool = False) -> None:
        """Delete; `erase`: the person asked to be forgotten, so the document left to carry
        the version sequence keeps no value but the identity it is stored under."""
        self.deleted = True
        if erase:
            self.erased = True
            self.fields = {k: v for k, v in self.fields.items() if v == self.key}
            self.status_reason = None
        self._bump(now, source)
        self.events.append(
            ContactDeleted(
                contact_id=self.id,
                account_id=self.account_id,
                profile_id=self.profile_id,
                key=self.key,
                version=self.version,
                status=self.status,
                created_at=self.created_at,
                source=source,
                erased=erase,
            )
        )

    def snapshot(self) -> ContactSnapshot:
        return ContactSnapshot(
            id=self.id,
            account_id=self.account_id,
            profile_id=self.profile_id,
            key=self.key,
            fields=dict(self.fields),
            status=self.status,
            status_reason=self.status_reason,
            status_source=self.status_source,
            status_changed_at=self.status_changed_at,
            source=self.source,
            version=self.version,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def tell_as_import(self, row: ImportContact, previous_status: ContactStatus | None) -> None:
        """Replace the events of this change by one `ContactImported` naming the row."""
        if not self.events:
            return
        changed: set[str] = set()
        for event in self.events:
            if isinstance(event, ContactUpdated):
                changed |= set(event.changed)
            elif isinstance(event, ContactStatusChanged):
                changed.add("status")
        created = any(isinstance(event, ContactCreated) for event in self.events)
        self.events = [
            ContactImported(
                contact=self.snapshot(),
                import_id=row.import_id,
                action=row.action,
                line=row.line,
                created=created,
                changed=tuple(sorted(self.fields if created else changed)),
                previous_status=None if created or "status" not in changed else previous_status,
            )
        ]

    def take_events(self) -> list[DomainEvent]:
        events, self.events = self.events, []
        return events


def apply_bulk_change(
    contact: Contact | None, change: BulkChange, *, now: datetime
) -> tuple[BulkOutcome, bool]:
    """What a bulk action's change does to one contact as stored (a deleted one too), which it
    changes in place: the outcome, and whether to write it. A contact the action changed
    already repeats that outcome unwritten, so a redelivered page counts as the first did."""
    if contact is not None and contact.bulk is not None and contact.bulk.job_id == change.job_id:
        return contact.bulk.outcome, False
    if contact is None or contact.deleted:
        return BulkOutcome.NOT_FOUND, False
    if change.action is BulkAction.DELETE:
        contact.delete(source=change.source, now=now)
        outcome = BulkOutcome.DELETED
    else:
        assert change.status is not None, "a status change names its status"
        if not contact.change_status(
            change.status, reason=change.reason, source=change.source, now=now
        ):
            return BulkOutcome.UNCHANGED, False
        outcome = BulkOutcome.CHANGED
    contact.bulk = BulkStamp(change.job_id, outcome)
    return outcome, True


# -- listing order and cursors -------------------------------------------------------------------


class ContactOrder(StrEnum):
    KEY = "key"
    OLDEST = "created_at"
    NEWEST = "-created_at"


@dataclass(frozen=True)
class PagePosition:
    """Where a page ended: the last contact's creation time (time orders) and key."""

    key: str
    created_at: datetime | None = None


def page_cursor(order: ContactOrder, contact: Contact) -> str:
    """An opaque token for the page after `contact`."""
    created = contact.created_at.isoformat() if order is not ContactOrder.KEY else None
    raw = json.dumps([order.value, created, contact.key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(order: ContactOrder, token: str) -> PagePosition:
    """The position a cursor token names; ValuesInvalid if it is not one of this order's."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        token_order, created, key = json.loads(raw)
        if token_order != order.value or not isinstance(key, str):
            raise ValueError(token_order)
        return PagePosition(key, datetime.fromisoformat(created) if created else None)
    except (ValueError, TypeError) as exc:
        raise ValuesInvalid(
            [FieldProblem("cursor", "not a cursor of this listing (use next_cursor as given)")]
        ) from exc


# -- import rows -----------------------------------------------------------------------------


def import_rows(
    contact: Contact | None,
    rows: Sequence[ImportContact],
    *,
    schema: ProfileSchema,
    new_contact: Callable[[ImportContact], Contact],
    now: datetime,
) -> tuple[Contact | None, list[RowOutcome], bool]:
    """Apply one contact's rows of an import, in line order: the contact after them (None if
    still absent), each row's outcome, and whether it must be written. A row the stamp shows
    as applied repeats its outcome and changes nothing; a later row of the same import is a
    duplicate key, applied (last wins). The contact carries one `ContactImported` at most."""
    outcomes: list[RowOutcome] = []
    write = False
    previous_status = contact.status if contact is not None else None
    imports_seen: set[str] = set()  # of the rows before, here (the stamp may not show them)
    for row in rows:
        stamp = contact.imported if contact is not None else None
        stamped = stamp is not None and stamp.import_id == row.import_id
        same_import = stamped or row.import_id in imports_seen
        imports_seen.add(row.import_id)
        if stamp is not None and stamped and (done := stamp.outcome_of(row.line)):
            outcomes.append(done)
            continue
        if contact is None:
            if row.action is ImportAction.UNSUBSCRIBE:
                outcomes.append(RowOutcome.NOT_FOUND)
                continue
            contact, outcome = new_contact(row), RowOutcome.CREATED
        elif row.action is ImportAction.APPEND:
            outcome = RowOutcome.UNCHANGED
        elif row.action is ImportAction.UNSUBSCRIBE:
            reason = f"unsubscribed by import {row.import_id}"
            changed = contact.change_status(
                ContactStatus.UNSUBSCRIBED, reason=reason, source=row.source, now=now
            )
            outcome = RowOutcome.UNSUBSCRIBED if changed else RowOutcome.UNCHANGED
        else:
            changed_keys = contact.set_values(
                dict(row.values), schema=schema, replace_all=False, source=row.source, now=now
            )
            outcome = RowOutcome.UPDATED if changed_keys else RowOutcome.UNCHANGED
        if same_import:
            outcome = RowOutcome.DUPLICATE
        if outcome is not RowOutcome.UNCHANGED or row.action is ImportAction.OVERWRITE:
            first = stamp if stamped and stamp is not None else None
            contact.imported = ImportStamp(
                row.import_id,
                first.first_line if first else row.line,
                first.first_outcome if first else outcome,
                row.line,
                outcome,
            )
            write = True
        outcomes.append(outcome)
    if contact is not None and rows:
        contact.tell_as_import(rows[-1], previous_status)
    return contact, outcomes, write
