"""Use cases that delete contacts, each with its event: the command consumer's deletions and
erasures, an overwriting import's purge, and a deleted profile's contacts, the last two page
by page in bounded batches."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from contact_svc.contact_repository import ContactRepository
from contact_svc.domain import Contact, PagePosition
from contacts_shared.commands import DeleteContact, PurgeForImport
from contacts_shared.mongo import StaleDocument, bson_now, retry_if_stale
from contacts_shared.profiles import SchemaStore

# Contacts read at a time when deleting a profile's, or purging for an overwriting import.
DELETION_BATCH = 500


async def apply_deletes(
    commands: Sequence[DeleteContact], *, schemas: SchemaStore, contacts: ContactRepository
) -> None:
    """Delete the contacts named, in order, each with its event; an erasure also wipes what
    a deletion before it left. A contact the profile does not hold, or a profile gone, is
    left as it is; so is a contact already deleted (erased) when the command comes again."""
    accounts: dict[str, str | None] = {}  # each profile's account, read once per batch
    for command in commands:
        if command.profile_id not in accounts:
            schema = await schemas.get(command.profile_id)
            accounts[command.profile_id] = schema.account_id if schema else None
        if accounts[command.profile_id] == command.account_id:
            await retry_if_stale(partial(_delete_one, command, contacts))


async def _delete_one(command: DeleteContact, contacts: ContactRepository) -> None:
    stored = await contacts.find_even_deleted(command.profile_id, command.key)
    if stored is None or (stored.deleted and (stored.erased or not command.erase)):
        return
    was_deleted, expected = stored.deleted, stored.version
    stored.delete(source=command.source, now=bson_now(), erase=command.erase)
    await contacts.save(stored, expected_version=expected, deleted_before=was_deleted)


async def purge_for_import(
    command: PurgeForImport, *, schemas: SchemaStore, contacts: ContactRepository
) -> int:
    """Delete, with their events, the profile's contacts that no row of the overwrite wrote;
    the number this purge has deleted in all its runs, so a redelivery reports the same."""
    schema = await schemas.get(command.profile_id)
    if schema is None or schema.account_id != command.account_id:
        return 0
    after: PagePosition | None = None
    while page := await contacts.find_page(
        command.profile_id,
        status=None,
        key_prefix=None,
        field_equals=None,
        after=after,
        limit=DELETION_BATCH,
    ):
        for contact in page:
            await _purge_one(command, contact, contacts)
        after = PagePosition(page[-1].key)
    return await contacts.count_deleted_by(command.profile_id, command.source)


async def _purge_one(command: PurgeForImport, read: Contact, contacts: ContactRepository) -> None:
    first: Contact | None = read

    async def change() -> None:
        nonlocal first
        live = first or (await contacts.find(command.profile_id, read.key))[0]
        first = None  # a retry reads again
        if live is None or (live.imported and live.imported.import_id == command.import_id):
            return  # gone meanwhile, or written by the import's rows: kept
        expected = live.version
        live.delete(source=command.source, now=bson_now())
        await contacts.save(live, expected_version=expected)

    await retry_if_stale(change)


async def delete_profile_contacts(
    *, profile_id: str, source: str, contacts: ContactRepository
) -> int:
    """Delete every contact of a deleted profile, each with its ContactDeleted event, in
    bounded batches; running it again (a redelivered event) finds nothing left to do."""
    deleted = 0
    while page := await contacts.find_page(
        profile_id,
        status=None,
        key_prefix=None,
        field_equals=None,
        after=None,
        limit=DELETION_BATCH,
    ):
        for contact in page:
            expected = contact.version
            contact.delete(source=source, now=bson_now())
            try:
                await contacts.save(contact, expected_version=expected)
                deleted += 1
            except StaleDocument:
                continue  # changed meanwhile: the next page reads it again
    return deleted
