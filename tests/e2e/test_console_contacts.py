"""The console's contacts pages in Debian's headless Chromium, against the real services on the
real stack: a marketer makes a profile with fields, adds contacts with its generated form (one
refused for a bad date, the error at the field), finds one by search, changes its status with a
reason and sees it in its audit trail, then changes two contacts' status at once with a bulk
action, confirmed with its count and followed until it completes. axe-core checks every page.

With `CONTACTS_SCREENSHOTS=<folder>` the run also saves each page there (1280x800, and the list
at 375 px wide)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

pytestmark = pytest.mark.integration

# contact-svc learns of a new profile from profiles.events, a moment after it is created.
KNOWN_WITHIN = 30.0


async def make_profile(page: Page, console: Any) -> None:
    """A regular profile with a text, a date and a number field, made in New Profile."""
    await console.go(page, "New Profile")
    await page.get_by_label("Name", exact=True).fill("Clientes tienda")
    for name, field_type in (("Ciudad", "text"), ("Nacimiento", "date"), ("Edad", "number")):
        await page.get_by_role("button", name="Add").click()
        await page.locator("input[name=field_name]").last.fill(name)
        await page.locator("select[name=field_type]").last.select_option(field_type)
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("row", name="Clientes tienda")).to_be_visible()


async def until_contacts_know_it(page: Page, console: Any) -> str:
    """Opens the profile in List Contacts, again until contact-svc knows it; its id."""
    await console.go(page, "List Contacts")
    await page.get_by_label("Profile", exact=True).select_option(label="Clientes tienda")
    await expect(page.get_by_role("heading", name="Contacts of Clientes tienda")).to_be_visible()
    profile_id = await page.get_by_label("Profile", exact=True).input_value()
    deadline = time.monotonic() + KNOWN_WITHIN
    while await page.get_by_text("No contact matches.").count() == 0:
        assert time.monotonic() < deadline, await page.locator("main").inner_text()
        await page.wait_for_timeout(200)
        await page.goto(f"{console.url}/contacts?profile_id={profile_id}")
    return profile_id


async def add_contact(page: Page, email: str, **fields: str) -> None:
    await page.get_by_label("email").fill(email)
    for name, value in fields.items():
        await page.get_by_label(name, exact=True).fill(value)


async def test_a_marketer_adds_finds_edits_and_bulk_changes_contacts(
    browser: Browser, console: Any
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await console.sign_in(page)
    await make_profile(page, console)
    profile_id = await until_contacts_know_it(page, console)
    await console.accessible(page, "list-contacts-empty")

    # New Contact: the form follows the profile's fields, typed.
    await console.go(page, "New Contact")
    await console.accessible(page, "new-contact-pick")
    await page.get_by_label("Profile", exact=True).select_option(label="Clientes tienda")
    await expect(page.get_by_label("Nacimiento")).to_have_attribute("type", "date")
    await expect(page.get_by_label("Edad")).to_have_attribute("type", "number")
    await expect(page.get_by_label("email")).to_have_attribute("type", "email")
    await console.accessible(page, "new-contact")
    await add_contact(
        page, "ana@example.cl", Ciudad="Viña del Mar", Nacimiento="1990-04-01", Edad="41"
    )
    await page.get_by_role("button", name="Save and add another").click()
    await expect(page.get_by_text("Contact ana@example.cl added.")).to_be_visible()
    await expect(page.get_by_label("email")).to_have_value("")

    # A year of five digits is a date to the browser, not to contact-svc: said at the field.
    await add_contact(page, "bea@example.cl", Ciudad="Santiago", Nacimiento="20201-02-03")
    await page.get_by_role("button", name="Save and add another").click()
    birth = page.get_by_label("Nacimiento")
    await expect(birth).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#field_nacimiento_error")).to_contain_text("is not a date")
    await expect(page.get_by_label("Ciudad")).to_have_value("Santiago")  # kept as typed
    await console.accessible(page, "new-contact-refused")
    await birth.fill("2001-02-03")
    await page.get_by_role("button", name="Save and add another").click()
    await expect(page.get_by_text("Contact bea@example.cl added.")).to_be_visible()
    await add_contact(page, "carla@example.cl", Ciudad="Valparaíso")
    await page.get_by_role("button", name="Save", exact=True).click()
    await expect(page.get_by_role("heading", name="carla@example.cl")).to_be_visible()
    await expect(page.get_by_text("Contact added.")).to_be_visible()

    # List Contacts: found by the key's start, and by a field's value (accents aside).
    await page.goto(f"{console.url}/contacts?profile_id={profile_id}")
    await console.reload_until(page, "3 contacts")  # counted from the events, a moment later
    await page.get_by_label("Email or phone starts with").fill("an")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("row", name="ana@example.cl")).to_be_visible()
    await expect(page.get_by_role("row", name="bea@example.cl")).to_have_count(0)
    await page.get_by_label("Email or phone starts with").fill("")
    await page.get_by_label("Field", exact=True).select_option("Ciudad")
    await page.get_by_label("Its value starts with").fill("vina")
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("row", name="ana@example.cl")).to_be_visible()
    await expect(page.get_by_role("row", name="carla@example.cl")).to_have_count(0)
    await expect(page.get_by_text("1 contact", exact=True)).to_be_visible()
    await console.accessible(page, "list-contacts-search")

    # A contact's page: its status changed with a reason, then seen in its audit trail.
    await page.get_by_role("link", name="ana@example.cl").click()
    await expect(page.get_by_role("heading", name="ana@example.cl")).to_be_visible()
    await expect(page.get_by_label("Edad")).to_have_value("41")
    await page.get_by_label("New status").select_option("unsubscribed")
    await page.get_by_label("Reason").fill("asked by phone")
    await page.get_by_role("button", name="Change status").click()
    await expect(page.get_by_text("Status changed.")).to_be_visible()
    await console.reload_until(page, "Status: Active → Unsubscribed (asked by phone)")
    await expect(page.get_by_role("row", name="Created")).to_contain_text("Viña del Mar")
    await expect(page.get_by_text("In no virtual profile.")).to_be_visible()
    await console.accessible(page, "contact")

    # Two rows selected, one status for both, confirmed with their count, followed to the end.
    await page.get_by_role("link", name="Back to the list").click()
    await page.get_by_label("Select bea@example.cl").check()
    await page.get_by_label("Select carla@example.cl").check()
    await page.get_by_label("Action").select_option("change_status")
    await page.get_by_label("New status").select_option("bounced")
    await page.get_by_label("Reason").fill("mailbox full")
    await console.accessible(page, "list-contacts")
    await page.set_viewport_size({"width": 375, "height": 800})
    await console.accessible(page, "list-contacts-375")
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.get_by_role("button", name="Review").click()
    await expect(page.get_by_text("Change the status of 2 contacts to bounced?")).to_be_visible()
    await console.accessible(page, "bulk-confirm")
    await page.get_by_role("button", name="Confirm").click()
    await expect(page.get_by_role("heading", name="Bulk action")).to_be_visible()
    await expect(page.get_by_text("Completed", exact=True)).to_be_visible(timeout=30_000)
    await expect(page.get_by_role("row", name="Contacts changed")).to_contain_text("2")
    await console.accessible(page, "bulk-progress")

    await page.goto(f"{console.url}/contacts?profile_id={profile_id}&status=bounced")
    await expect(page.get_by_role("row", name="bea@example.cl")).to_contain_text("Bounced")
    await expect(page.get_by_role("row", name="carla@example.cl")).to_be_visible()
    await expect(page.get_by_role("row", name="ana@example.cl")).to_have_count(0)
