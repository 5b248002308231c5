"""A contact's audit trail: what changed it, when, and by which source, one entry per version,
from contact-svc's events; a contact erased at the person's request loses its trail. Each entry
keeps the contact's values after its version, so an entry served beside the one before it
tells each changed field's old and new value. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contacts_shared.events import (
    ContactCreated,
    ContactDeleted,
    ContactImported,
    ContactStatusChanged,
    ContactUpdated,
    DomainEvent,
)

# Between the contact id and the version: no email or phone holds it, so one contact's
# entries are one `_id` range.
SEPARATOR = "\x1f"
PAST_SEPARATOR = chr(ord(SEPARATOR) + 1)
CONTACT_EVENTS = (ContactCreated, ContactUpdated, ContactStatusChanged, ContactImported)
# What an entry's `_id` holds, so its stored document does not repeat it.
DERIVED = frozenset({"contact_id", "version"})


def audit_entry(event: DomainEvent, at: datetime) -> dict[str, Any] | None:
    """The trail's entry for a contact event (None for other events, and for an erasure: the
    contact id holds the person's email); `_id` is the contact and its version, so an event
    delivered twice writes the same entry. A creation's changed fields are its values' keys,
    so it does not name them again (`served_entry` does); attributes without a value are left
    out."""
    if isinstance(event, ContactDeleted):
        if event.erased:
            return None
        contact_id, version = event.contact_id, event.version
        entry: dict[str, Any] = {
            "account_id": event.account_id,
            "change": "deleted",
            "source": event.source,
            "status": event.status.value,
        }
    elif isinstance(event, CONTACT_EVENTS):
        contact = event.contact
        contact_id, version = contact.id, contact.version
        entry = {
            "account_id": contact.account_id,
            "source": contact.source,
            "status": contact.status.value,
            # All values, not only the changed ones: the next version's old values. The fields
            # alone are dumped (as JSON, so dates are strings), not the whole snapshot.
            "values": contact.model_dump(mode="json", include={"fields"})["fields"],
        }
        if isinstance(event, ContactCreated):
            entry["change"] = "created"
        elif isinstance(event, ContactUpdated):
            entry |= {"change": "updated", "fields": list(event.changed)}
        elif isinstance(event, ContactStatusChanged):
            entry |= {
                "change": "status_changed",
                "fields": ["status"],
                "previous_status": event.previous_status.value,
            }
            if contact.status_reason is not None:
                entry["status_reason"] = contact.status_reason
        else:
            entry |= {"import_id": event.import_id, "line": event.line}
            if event.created:
                entry["change"] = "created"
            else:
                entry |= {"change": "updated", "fields": list(event.changed)}
            if event.previous_status is not None:
                entry["previous_status"] = event.previous_status.value
                if contact.status_reason is not None:
                    entry["status_reason"] = contact.status_reason
    else:
        return None
    return {
        "_id": f"{contact_id}{SEPARATOR}{version:012d}",
        "contact_id": contact_id,
        "version": version,
        "at": at,
        **entry,
    }


def stored_document(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry as stored: without its contact id and version, which its `_id` holds."""
    return {k: v for k, v in entry.items() if k not in DERIVED}


def stored_entry(document: Mapping[str, Any]) -> dict[str, Any]:
    """A stored entry (`stored_document`) with its contact id and version again."""
    entry_id: str = document["_id"]
    contact_id, _, version = entry_id.rpartition(SEPARATOR)
    return {**document, "contact_id": contact_id, "version": int(version)}


def trail_range(
    contact_id: str, after_version: int = 0, before_version: int | None = None
) -> dict[str, str]:
    """The `_id` range of a contact's entries after `after_version` and before
    `before_version` (if given), in version order."""
    return {
        "$gt": f"{contact_id}{SEPARATOR}{after_version:012d}",
        "$lt": f"{contact_id}{SEPARATOR}{before_version:012d}"
        if before_version is not None
        else f"{contact_id}{PAST_SEPARATOR}",
    }


def served_entry(
    entry: Mapping[str, Any], previous: Mapping[str, Any] | None, names: Mapping[str, str]
) -> dict[str, Any]:
    """An entry as the API serves it: each field it changed by its name (`names`: key -> name;
    a key not there, a field deleted since, stays its key) with its value before, from the
    `previous` entry of the contact, and after. A creation has no value before; values an
    entry does not keep (a deletion's, an entry older than the values) are None. The status is
    told apart (`status`, `previous_status`, `status_reason`), not as a field."""
    after: Mapping[str, Any] = entry.get("values") or {}
    before: Mapping[str, Any] = {}
    created = entry.get("change") == "created"
    if previous is not None and not created:
        before = previous.get("values") or {}
    # A creation changed every field it has, so it is stored without naming them (entries
    # stored before that name them).
    fields = entry.get("fields") or (sorted(after) if created else [])
    status_told = entry.get("previous_status") is not None
    changes = [
        {"field": names.get(key, key), "old": before.get(key), "new": after.get(key)}
        for key in fields
        if not (key == "status" and status_told)
    ]
    return {**entry, "fields": fields, "changes": changes}


@dataclass(frozen=True)
class TrailChanges:
    """What a batch of contact events does to the trail: the entries to write, and the erased
    contacts with the version up to which their entries go."""

    entries: list[dict[str, Any]]
    erased: dict[str, int]


def trail_changes(events: Iterable[tuple[DomainEvent, datetime]]) -> TrailChanges:
    """The changes a batch of events (each with when it was published) makes. An erased
    contact's entries of the batch up to its erasure are not written; later ones (the contact
    added again) are."""
    entries: list[dict[str, Any]] = []
    erased: dict[str, int] = {}
    for event, at in events:
        entry = audit_entry(event, at)
        if entry is not None:
            entries.append(entry)
        if isinstance(event, ContactDeleted) and event.erased:
            # The newest erasure wins: a copy of an older one, published again late, follows it.
            erased[event.contact_id] = max(event.version, erased.get(event.contact_id, 0))
    if erased:
        entries = [e for e in entries if e["version"] > erased.get(e["contact_id"], 0)]
    return TrailChanges(entries, erased)


def erased_range(contact_id: str, version: int) -> dict[str, str]:
    """The `_id` range of a contact's entries up to and including `version`."""
    return {"$gt": f"{contact_id}{SEPARATOR}", "$lte": f"{contact_id}{SEPARATOR}{version:012d}"}


def served_entries(
    entries: Sequence[Mapping[str, Any]],
    previous: Mapping[str, Any] | None,
    names: Mapping[str, str],
) -> list[dict[str, Any]]:
    """`entries` (a contact's, oldest first) as served, each beside the one before it;
    `previous` is the entry before the first, if any."""
    befores = [previous, *entries[:-1]]
    return [served_entry(e, before, names) for e, before in zip(entries, befores, strict=False)]
