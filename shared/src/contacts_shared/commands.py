"""Commands on Kafka: requests to change state, applied by the owning service's consumer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contacts_shared.schema import ContactStatus


def contact_partition_key(profile_id: str, key: str) -> str:
    """The Kafka key of every command (and event) about one contact."""
    return f"{profile_id}:{key}"


class ContactKeyed(BaseModel):
    """A command about one contact, on `contacts.commands` keyed `profile_id:key`, so that one
    writer applies each contact's commands in order, whatever sent them."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    profile_id: str
    key: str = Field(description="normalized email or E.164 phone")

    @property
    def partition_key(self) -> str:
        return contact_partition_key(self.profile_id, self.key)


class ContactCommandBase(ContactKeyed):
    """A change to one contact's values."""

    values: dict[str, Any] = Field(description="validated values by field key")


class UpsertContact(ContactCommandBase):
    """Create a contact or change only the given values (webhook records, batches); `status`
    (with its reason): what the record tells, a consent withdrawn, set on a new or active
    contact (a suppressed one keeps its own)."""

    type: Literal["contacts.command.upsert_contact"] = "contacts.command.upsert_contact"
    command_id: str
    source: str = Field(description="e.g. webhook:<source id>")
    received_at: datetime
    status: ContactStatus | None = None
    status_reason: str | None = None


class DeleteContact(ContactKeyed):
    """Delete a contact (a store deleted its customer); `erase`: at the person's request, its
    values and history go too (a store's GDPR redact). A contact not held is left as it is."""

    type: Literal["contacts.command.delete_contact"] = "contacts.command.delete_contact"
    command_id: str
    source: str = Field(description="e.g. webhook:<source id>")
    erase: bool = False


class UpsertContacts(BaseModel):
    """A webhook delivery's upserts that share a partition of `contacts.commands`, in one
    message sent to that partition: a delivery costs a message per partition instead of one per
    record (ADR 13). Applied as its upserts, in order; each is keyed by its contact as above."""

    model_config = ConfigDict(frozen=True)

    type: Literal["contacts.command.upsert_contacts"] = "contacts.command.upsert_contacts"
    upserts: tuple[UpsertContact, ...] = Field(min_length=1)


# Well under the 1 MB a Kafka record may have by default, whatever a delivery holds.
UPSERTS_RECORD_BYTES = 256 * 1024


def upserts_records(
    upserts: Iterable[UpsertContact], *, max_bytes: int = UPSERTS_RECORD_BYTES
) -> Iterator[bytes]:
    """`UpsertContacts` records carrying `upserts` in order, each under `max_bytes` (but one
    whose single upsert is larger): each upsert is serialized once, and the records are joined
    from those parts."""
    head = f'{{"type":"{UpsertContacts.model_fields["type"].default}","upserts":['.encode()
    parts: list[bytes] = []
    size = len(head) + 2
    for upsert in upserts:
        part = upsert.model_dump_json().encode()
        if parts and size + len(part) + 1 > max_bytes:
            yield head + b",".join(parts) + b"]}"
            parts, size = [], len(head) + 2
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield head + b",".join(parts) + b"]}"


# -- imports ---------------------------------------------------------------------------------


class ImportAction(StrEnum):
    APPEND = "append"  # add new contacts; existing ones untouched
    APPEND_OR_UPDATE = "append_or_update"  # add new, change the imported columns of existing
    OVERWRITE = "overwrite"  # append_or_update, then delete the profile's other contacts
    UNSUBSCRIBE = "unsubscribe"  # listed contacts become unsubscribed; nothing else changes


class RowOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    UNSUBSCRIBED = "unsubscribed"
    DUPLICATE = "duplicate"  # its key came earlier in the same import: applied, last wins
    NOT_FOUND = "not_found"  # unsubscribe of a contact the profile does not hold
    PROFILE_GONE = "profile_gone"  # the profile was deleted during the import


class ImportContact(ContactCommandBase):
    """One valid row of an import. `sequence` is the row's index among the import's rows sent
    to the same partition: it depends only on the file, so a resent row repeats it (ADR 10)."""

    type: Literal["contacts.command.import_contact"] = "contacts.command.import_contact"
    import_id: str
    action: ImportAction
    line: int = Field(ge=1, description="where the row starts in the file")
    sequence: int = Field(ge=0)

    @property
    def source(self) -> str:
        return f"import:{self.import_id}"


class PurgeForImport(BaseModel):
    """After an overwrite's last row: delete the profile's contacts its rows did not write
    (on `contacts.commands`, keyed by profile id). Applying it again deletes nothing more."""

    model_config = ConfigDict(frozen=True)

    type: Literal["contacts.command.purge_for_import"] = "contacts.command.purge_for_import"
    import_id: str
    account_id: str
    profile_id: str

    @property
    def partition_key(self) -> str:
        return self.profile_id

    @property
    def source(self) -> str:
        return f"import:{self.import_id}"


# -- bulk actions ----------------------------------------------------------------------------


class BulkAction(StrEnum):
    CHANGE_STATUS = "change_status"
    DELETE = "delete"


class BulkOutcome(StrEnum):
    CHANGED = "changed"  # its status set
    UNCHANGED = "unchanged"  # it had that status already
    DELETED = "deleted"
    NOT_FOUND = "not_found"  # the profile does not hold it (any more)


class BulkChange(BaseModel):
    """One page of a bulk action's selection, the keys of it that share a partition of
    `contacts.commands`, sent to that partition: their one writer applies it in order with
    their other commands. `page` numbers the job's pages in selection order; a page sent again
    after the sender's crash repeats its number, so it is counted once (ADR 18)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["contacts.command.bulk_change"] = "contacts.command.bulk_change"
    job_id: str
    account_id: str
    profile_id: str
    page: int = Field(ge=1)
    keys: tuple[str, ...] = Field(min_length=1)
    action: BulkAction
    status: ContactStatus | None = None
    reason: str | None = None

    @property
    def source(self) -> str:
        return f"bulk:{self.job_id}"


OneContactCommand = UpsertContact | DeleteContact | ImportContact | PurgeForImport | BulkChange
AnyContactCommand = (
    UpsertContact | UpsertContacts | DeleteContact | ImportContact | PurgeForImport | BulkChange
)
ContactCommand = Annotated[AnyContactCommand, Field(discriminator="type")]
CONTACT_COMMAND: TypeAdapter[AnyContactCommand] = TypeAdapter(ContactCommand)


def commands_in(value: bytes) -> Sequence[OneContactCommand]:
    """The commands a record of `contacts.commands` carries, in order."""
    command = CONTACT_COMMAND.validate_json(value)
    return command.upserts if isinstance(command, UpsertContacts) else (command,)


class ImportRowsApplied(BaseModel):
    """What contact-svc did with an import's rows in one partition's batch (on
    `imports.results`, keyed by import id): (sequence, line, outcome) per row, in the order
    applied. A redelivered batch repeats the outcomes of the first run."""

    model_config = ConfigDict(frozen=True)

    type: Literal["imports.result.rows_applied"] = "imports.result.rows_applied"
    import_id: str
    partition: int
    rows: list[tuple[int, int, RowOutcome]]


class ImportPurged(BaseModel):
    """An overwrite's purge is done: `deleted` contacts of the profile were deleted by it (all
    its runs together, so a redelivered purge reports the same)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["imports.result.purged"] = "imports.result.purged"
    import_id: str
    deleted: int


ImportResult = Annotated[ImportRowsApplied | ImportPurged, Field(discriminator="type")]
IMPORT_RESULT: TypeAdapter[ImportRowsApplied | ImportPurged] = TypeAdapter(ImportResult)
