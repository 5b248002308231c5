"""A contact as stored: its document, with the strings the listing indexes serve (ADR 9),
and back."""

from __future__ import annotations

import struct
import unicodedata
from dataclasses import asdict
from datetime import UTC, datetime

from contact_svc.domain import BulkStamp, Contact, ImportStamp, contact_id
from contacts_shared.commands import BulkOutcome, RowOutcome
from contacts_shared.mongo import Document, prefix_range
from contacts_shared.sampling import SAMPLE_BUCKETS, sample_bucket
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
# The contact's status, its last change's source and every field value, as exact terms; and the
# sample term on one contact in SAMPLE_RATE.
SEARCH_TERMS = "search_terms"
CREATED_ORDER = "created_order"  # profile, creation time and key: creation order, one range
# Each field value's sort key (`sort_key`) under the field's key: one string per path, so a
# range of one field's keys is read as a range (a range on the multikey terms is not: DocumentDB
# answers it as "one term above, any term below", reading the whole index).
SORT_KEYS = "sort_keys"
SEPARATOR = "\x1f"
PAST_SEPARATOR = chr(ord(SEPARATOR) + 1)
# Longer values are not indexed (index keys are bounded); equality on them still works, by
# reading the profile in key order.
MAX_TERM_VALUE = 256
# Text sorts, and is searched by prefix, by its folded form up to this many characters: longer
# values are found by prefixes of up to this length (a prefix search asks for no more), and
# sort among themselves by key after it.
FOLDED_TERM_LENGTH = 64
# One contact in SAMPLE_RATE (bucket 0 of the shared hash of its key, `contacts_shared.sampling`,
# as segment-svc's previews sample) carries its profile's sample term: about 3,900 contacts of a
# million, read to estimate counts and to size the ranges of sorted pages.
SAMPLE_RATE = SAMPLE_BUCKETS
# The document shape: which derived fields (terms, sort keys, creation order) a contact's document
# carries. Every write sets the current one; documents of an older shape (none written: 1) are
# brought to it in the background (`shape_backfill`). Raise it whenever `derived_fields` changes.
SHAPE = "shape"
CURRENT_SHAPE = 2


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
    """What the folded terms of contacts written before sort keys start with (`drop_field`
    still removes them)."""
    return SEPARATOR.join(("fold", profile_id, field_key, prefix))


def sample_term(profile_id: str) -> str:
    """The term of the profile's sample (`SAMPLE_RATE`)."""
    return SEPARATOR.join(("sample", profile_id))


def in_sample(key: str) -> bool:
    """Whether the contact with this key is in its profile's sample: a stable 1 in SAMPLE_RATE,
    spread evenly over any range of values or keys."""
    return sample_bucket(key) == 0


def sortable_text(text: str) -> str:
    """Text as it sorts and as a prefix search compares it: folded (`folded`), its first
    FOLDED_TERM_LENGTH characters, control characters as spaces (they would sort below the
    separator that ends the value in a sort key)."""
    return "".join(" " if c < " " else c for c in folded(text)[:FOLDED_TERM_LENGTH])


TEXT_TAG = "2"


def sort_value(value: object) -> str | None:
    """A stored value as a string that sorts as values of its type do: numbers by magnitude
    (as 64-bit floats), text by `sortable_text` (ISO dates are text: they sort as dates), false
    before true; numbers before text before booleans, should a field hold several types. None:
    no order (a list, an object, null)."""
    if isinstance(value, bool):
        return "3" + ("1" if value else "0")
    if isinstance(value, int | float):
        bits: int = struct.unpack(">Q", struct.pack(">d", float(value)))[0]
        # IEEE 754 bits sort as unsigned integers once a negative's are all flipped (larger
        # magnitude, lower) and a positive's sign bit is set (above every negative).
        bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
        return f"1{bits:016x}"
    if isinstance(value, str):
        return TEXT_TAG + sortable_text(value)
    return None


def sort_key(profile_id: str, value: object, key: str) -> str | None:
    """Sorts as (profile, value, key): a page by a field's value ends at one (None: the value
    has no order, `sort_value`)."""
    ordered = sort_value(value)
    return None if ordered is None else SEPARATOR.join((profile_id, ordered, key))


def sort_range(profile_id: str) -> Document:
    """The range of the profile's sort keys (of any one field)."""
    return {"$gt": profile_id + SEPARATOR, "$lt": profile_id + PAST_SEPARATOR}


def text_prefix_range(profile_id: str, prefix: str) -> Document:
    """The range of the sort keys of text values that start with `prefix` (`sortable_text`)."""
    return prefix_range(SEPARATOR.join((profile_id, TEXT_TAG + prefix)))


def created_order(profile_id: str, created_at: datetime, key: str = "") -> str:
    """Sorts as (profile, creation time, key); fixed-width UTC milliseconds."""
    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return SEPARATOR.join((profile_id, stamp, key))


def search_terms(contact: Contact) -> list[str]:
    profile_id = contact.profile_id
    terms = (field_term(profile_id, k, v) for k, v in contact.fields.items())
    sample = [sample_term(profile_id)] if in_sample(contact.key) else []
    return [
        status_term(profile_id, contact.status),
        source_term(profile_id, contact.source),
        *(t for t in terms if t),
        *sample,
    ]


def sort_keys(contact: Contact) -> dict[str, str]:
    """Each field value's `sort_key`, by field key."""
    keys = ((k, sort_key(contact.profile_id, v, contact.key)) for k, v in contact.fields.items())
    return {k: sorted_by for k, sorted_by in keys if sorted_by is not None}


def derived_fields(contact: Contact) -> Document:
    """What a document derives from its contact for the listing's indexes, with its shape: the
    fields a write of the current shape sets beside the contact's own."""
    return {
        SEARCH_TERMS: search_terms(contact),
        SORT_KEYS: sort_keys(contact),
        CREATED_ORDER: created_order(contact.profile_id, contact.created_at, contact.key),
        SHAPE: CURRENT_SHAPE,
    }


def older_shape() -> Document:
    """The condition on documents of an older shape than the current one (none: shape 1); a
    newer shape's, written by a later version, is left alone."""
    return {SHAPE: {"$in": [None, *range(1, CURRENT_SHAPE)]}}


def shape_of(document: Document) -> int:
    """The document's shape (1: written before shapes were numbered)."""
    shape: int = document.get(SHAPE) or 1
    return shape


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
        **derived_fields(contact),
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
