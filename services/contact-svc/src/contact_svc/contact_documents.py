"""A contact as stored: its document, with the strings the listing indexes serve (ADR 9),
and back."""

from __future__ import annotations

import unicodedata
from dataclasses import asdict
from datetime import UTC, datetime

from contact_svc.domain import BulkStamp, Contact, ImportStamp, contact_id
from contacts_shared.commands import BulkOutcome, RowOutcome
from contacts_shared.mongo import Document, prefix_range
from contacts_shared.schema import ContactStatus

# A deleted contact's document stays, with its last version, so that a contact added again
# later continues the version sequence consumers have seen.
DELETED = "deleted"
# The import rows that last wrote the contact (ADR 10).
IMPORTED = "imported"
# The bulk action that last changed the contact (ADR 18).
BULK = "bulk"
# Strings the listing indexes serve, each beginning with the profile id so one index range is
# one profile's share (DocumentDB keeps each field of a compound index as a separate term, so
# `profile_id` in a filter would read the whole profile). ADR 9.
# The contact's status, its last change's source and every field value, as exact terms; and
# every string value folded (`folded`), for prefix searches.
SEARCH_TERMS = "search_terms"
CREATED_ORDER = "created_order"  # profile, creation time and key: creation order, one range
SEPARATOR = "\x1f"
PAST_SEPARATOR = chr(ord(SEPARATOR) + 1)
# Longer values are not indexed (index keys are bounded); equality on them still works, by
# reading the profile in key order.
MAX_TERM_VALUE = 256
# Folded values are indexed up to this many characters: a longer value is found by prefixes of
# up to this length (a prefix search asks for no more).
FOLDED_TERM_LENGTH = 64


def status_term(profile_id: str, status: ContactStatus) -> str:
    return SEPARATOR.join(("status", profile_id, status.value))


def source_term(profile_id: str, source: str) -> str:
    """The term of the source of a contact's last change (`api`, `import:<id>`, ...)."""
    return SEPARATOR.join(("source", profile_id, source))


def field_term(profile_id: str, field_key: str, value: object) -> str | None:
    """The exact term of a stored value (None: not indexed); numbers equal as numbers."""
    if value is None or isinstance(value, list | dict):
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    else:
        text = str(value)
    if len(text) > MAX_TERM_VALUE:
        return None
    return field_term_prefix(profile_id, field_key) + text


def field_term_prefix(profile_id: str, field_key: str) -> str:
    """What the terms of every value of the field start with."""
    return SEPARATOR.join(("field", profile_id, field_key, ""))


def folded(text: str) -> str:
    """`text` as a case- and accent-insensitive search compares it: case folded, decomposed
    (NFKD) and without combining marks ("Viña del Mar" -> "vina del mar", "ﬁ" -> "fi")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def folded_term_prefix(profile_id: str, field_key: str, prefix: str = "") -> str:
    """What the folded terms of the field's values starting with `prefix` (folded) start with."""
    return SEPARATOR.join(("fold", profile_id, field_key, prefix))


def folded_term(profile_id: str, field_key: str, value: object) -> str | None:
    """The folded term of a string value, its first `FOLDED_TERM_LENGTH` characters (None: the
    value is not a string: numbers, booleans and lists have no prefix search)."""
    if not isinstance(value, str):
        return None
    return folded_term_prefix(profile_id, field_key, folded(value)[:FOLDED_TERM_LENGTH])


def created_order(profile_id: str, created_at: datetime, key: str = "") -> str:
    """Sorts as (profile, creation time, key); fixed-width UTC milliseconds."""
    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return SEPARATOR.join((profile_id, stamp, key))


def search_terms(contact: Contact) -> list[str]:
    profile_id, fields = contact.profile_id, contact.fields.items()
    terms = (field_term(profile_id, k, v) for k, v in fields)
    folded_terms = (folded_term(profile_id, k, v) for k, v in fields)
    return [
        status_term(profile_id, contact.status),
        source_term(profile_id, contact.source),
        *(t for t in terms if t),
        *(t for t in folded_terms if t),
    ]


def contact_document(contact: Contact) -> Document:
    return {
        "_id": contact.id,
        "account_id": contact.account_id,
        "profile_id": contact.profile_id,
        "key": contact.key,
        "fields": contact.fields,
        "status": contact.status.value,
        "status_reason": contact.status_reason,
        "status_source": contact.status_source,
        "status_changed_at": contact.status_changed_at,
        "source": contact.source,
        "version": contact.version,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
        DELETED: contact.deleted,
        "erased": contact.erased,
        IMPORTED: asdict(contact.imported) if contact.imported else None,
        BULK: asdict(contact.bulk) if contact.bulk else None,
        SEARCH_TERMS: search_terms(contact),
        CREATED_ORDER: created_order(contact.profile_id, contact.created_at, contact.key),
    }


def stored_contact(document: Document | None) -> tuple[Contact | None, int]:
    """The live contact of a document (None if absent or deleted) and its version (0: none)."""
    if document is None:
        return None, 0
    return (None if document.get(DELETED) else contact_of(document)), document["version"]


def contact_of(document: Document) -> Contact:
    """The contact a document holds, a deleted one too (`deleted` says)."""
    return Contact(
        account_id=document["account_id"],
        profile_id=document["profile_id"],
        key=document["key"],
        fields=document["fields"],
        status=ContactStatus(document["status"]),
        status_reason=document.get("status_reason"),
        status_source=document["status_source"],
        status_changed_at=document["status_changed_at"],
        source=document["source"],
        version=document["version"],
        created_at=document["created_at"],
        updated_at=document["updated_at"],
        deleted=bool(document.get(DELETED)),
        erased=bool(document.get("erased")),
        imported=_stamp(document.get(IMPORTED)),
        bulk=_bulk_stamp(document.get(BULK)),
    )


def _stamp(stored: Document | None) -> ImportStamp | None:
    if not stored:
        return None
    return ImportStamp(
        import_id=stored["import_id"],
        first_line=stored["first_line"],
        first_outcome=RowOutcome(stored["first_outcome"]),
        line=stored["line"],
        outcome=RowOutcome(stored["outcome"]),
    )


def _bulk_stamp(stored: Document | None) -> BulkStamp | None:
    return BulkStamp(stored["job_id"], BulkOutcome(stored["outcome"])) if stored else None


def profile_range(profile_id: str, key_prefix: str = "") -> Document:
    """The `_id` range of a profile's contacts whose keys start with `key_prefix`."""
    return prefix_range(contact_id(profile_id, key_prefix))
