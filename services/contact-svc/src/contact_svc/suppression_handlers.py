"""The account-wide suppression list brought to bear on contacts that escaped it (ADR 15)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from contact_svc.contact_repository import ContactRepository
from contact_svc.domain import SUPPRESSION_SOURCE, Contact, Suppression, suppression_told
from contacts_shared.events import ContactEvent, DomainEvent
from contacts_shared.mongo import bson_now, retry_if_stale
from contacts_shared.schema import ContactStatus


async def enforce_suppressions(
    events: Sequence[DomainEvent],
    *,
    profiles_of: Callable[[str], Awaitable[list[str]]],
    contacts: ContactRepository,
) -> int:
    """Bring under the suppression list the contacts that a batch of contact events shows may
    have escaped it (ADR 15); how many were suppressed. An active contact whose email or phone
    is suppressed arrived while the suppression was being written (its arrival read the list
    a moment before); a new suppression reaches the same email or phone in every other profile
    of the account. Either way the contact takes the suppressing status, `status_source`
    suppression, through a versioned write with its own event. The list is read before and
    after the contacts: before, to skip the (usual) batch with nothing suppressed; after, so a
    re-activation (which lifts the list before it writes the contact) is never undone."""
    suspects: dict[str, dict[str, set[str]]] = {}  # account -> profile -> keys
    suppressed: dict[str, set[str]] = {}  # account -> keys suppressed by this batch
    for event in events:
        told = suppression_told(event)
        if isinstance(told, Suppression):
            suppressed.setdefault(told.account_id, set()).add(told.key)
        elif isinstance(event, ContactEvent) and event.contact.status is ContactStatus.ACTIVE:
            contact = event.contact
            by_profile = suspects.setdefault(contact.account_id, {})
            by_profile.setdefault(contact.profile_id, set()).add(contact.key)
    enforced = 0
    for account_id in suspects.keys() | suppressed.keys():
        by_profile = suspects.get(account_id, {})
        keys = set().union(suppressed.get(account_id, set()), *by_profile.values())
        in_force = await contacts.suppressions_of(account_id, sorted(keys))
        if not in_force:
            continue
        targets = {p: held & in_force.keys() for p, held in by_profile.items()}
        if reached := suppressed.get(account_id, set()) & in_force.keys():
            for profile_id in await profiles_of(account_id):
                targets[profile_id] = targets.get(profile_id, set()) | reached
        for profile_id, profile_keys in targets.items():
            enforced += await _suppress_active(account_id, profile_id, profile_keys, contacts)
    return enforced


async def _suppress_active(
    account_id: str, profile_id: str, keys: set[str], contacts: ContactRepository
) -> int:
    """Give the profile's active contacts among `keys` the status their suppression says."""
    if not keys:
        return 0
    stored = await contacts.find_many(profile_id, sorted(keys))
    active = [k for k, (live, _) in stored.items() if live and live.status is ContactStatus.ACTIVE]
    if not active:
        return 0
    suppressions = await contacts.suppressions_of(account_id, active)
    suppressed = 0
    for key in active:
        if suppression := suppressions.get(key):
            suppressed += await _suppress_one(suppression, profile_id, stored[key], contacts)
    return suppressed


async def _suppress_one(
    suppression: Suppression,
    profile_id: str,
    read: tuple[Contact | None, int],
    contacts: ContactRepository,
) -> bool:
    """Suppress one contact, read (as `read`) while active, then found suppressed; a write
    raced by another reads the contact, then the list, again."""
    first: tuple[Contact | None, int] | None = read
    key, account_id = suppression.key, suppression.account_id

    async def change() -> bool:
        nonlocal first
        live, version = first or await contacts.find(profile_id, key)
        in_force: Suppression | None = suppression
        if first is None:
            in_force = (await contacts.suppressions_of(account_id, [key])).get(key)
        first = None
        if live is None or live.status is not ContactStatus.ACTIVE or in_force is None:
            return False
        live.change_status(
            in_force.status, reason=in_force.reason(), source=SUPPRESSION_SOURCE, now=bson_now()
        )
        await contacts.save(live, expected_version=version)
        return True

    return await retry_if_stale(change)
