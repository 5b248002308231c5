"""The console's Virtual Profile section and the actions on one profile in Debian's headless
Chromium, against the real services on the real stack: a marketer builds a virtual profile of
two rules over a regular profile (made, with its contacts, through the APIs), sees the
preview's count, saves it and sees its members; a contact edited on its page enters them;
the members are searched and exported. Then the regular profile's statistics, its edit, its
export, and its delete, refused while the virtual profile stands on it. axe-core checks every
page.

With `CONTACTS_SCREENSHOTS=<folder>` the run also saves each page there (1280x800, and the
builder at 375 px wide)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

pytestmark = pytest.mark.integration

# What a service learns from another's events comes a moment later.
KNOWN_WITHIN = 30.0
CONTACTS = {
    "ana@example.cl": {"Ciudad": "Santiago", "Edad": 31},
    "bea@example.cl": {"Ciudad": "Santiago", "Edad": 45},
    "carla@example.cl": {"Ciudad": "Lima", "Edad": 52},
    "dan@example.cl": {"Ciudad": "Santiago", "Edad": 22},
}


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + KNOWN_WITHIN
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.25)


# A promise of the next rule builder htmx swaps in, once htmx has set it up (its `htmx:load`).
NEXT_BUILDER = """() => {
  window.nextBuilder = new Promise(resolve => {
    const loaded = event => {
      if (event.target.id !== "builder") return;
      document.body.removeEventListener("htmx:load", loaded);
      resolve(true);
    };
    document.body.addEventListener("htmx:load", loaded);
  });
}"""


async def rebuilt(page: Page, select: Locator, value: str | None = None, **by: str) -> None:
    """Chooses in a select of the rule builder, and waits for the builder its server sends
    back: what is typed in the builder meanwhile would go with the one it replaces."""
    await page.evaluate(NEXT_BUILDER)
    await select.select_option(value, **by)
    await page.evaluate("() => window.nextBuilder")


async def regular_profile_with_contacts(api: httpx.AsyncClient, urls: dict[str, str]) -> str:
    """A regular profile with a text and a number field and four contacts, made through
    profile-svc and contact-svc, once segment-svc counts its contacts too; its id."""
    body = {
        "name": "Clientes tienda",
        "description": "Compradores online",
        "fields": [{"name": "Ciudad", "type": "text"}, {"name": "Edad", "type": "number"}],
    }
    created = await api.post(f"{urls['profile']}/v1/profiles", json=body)
    assert created.status_code == 201, created.text
    profile_id = str(created.json()["id"])
    contacts = f"{urls['contact']}/v1/profiles/{profile_id}/contacts"

    async def contact_svc_knows_it() -> bool:
        return (await api.get(contacts)).status_code == 200

    await eventually(contact_svc_knows_it, "contact-svc learns of the profile")
    for email, fields in CONTACTS.items():
        added = await api.post(contacts, json={"fields": {"email": email, **fields}})
        assert added.status_code == 201, added.text
    everyone = {"all": [{"field": "status", "op": "is", "value": "active"}]}

    async def segment_svc_has_them() -> bool:
        preview = await api.post(
            f"{urls['segment']}/v1/segments:preview",
            json={"base_profile_id": profile_id, "rules": everyone},
        )
        return preview.status_code == 200 and preview.json()["count"] == len(CONTACTS)

    await eventually(segment_svc_has_them, "segment-svc holds the four contacts")
    return profile_id


async def test_a_marketer_segments_a_profile_and_manages_it(browser: Browser, console: Any) -> None:
    urls = console.services
    async with httpx.AsyncClient(headers={"Authorization": "Bearer console-key"}) as api:
        profile_id = await regular_profile_with_contacts(api, urls)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        await console.sign_in(page)

        await console.go(page, "Virtual Profile")
        await expect(page.get_by_text("No virtual profile yet.")).to_be_visible()
        await console.accessible(page, "virtual-list-empty")
        await page.get_by_role("main").get_by_role("link", name="New Profile").first.click()
        await expect(page.get_by_role("heading", name="New virtual profile")).to_be_visible()
        await console.accessible(page, "virtual-new-empty")

        # Two rules: from Santiago, and at least 30 years old (ana and bea).
        await page.get_by_label("Name", exact=True).fill("Santiago 30+")
        await rebuilt(page, page.get_by_label("Profile to segment"), label="Clientes tienda")
        await rebuilt(page, page.get_by_label("Field of condition 1"), "Ciudad")
        await expect(page.get_by_label("Operator of condition 1")).to_have_value("equals")
        await page.get_by_label("Value of condition 1").fill("Santiago")
        await expect(page.get_by_text("3 contacts match")).to_be_visible()
        await page.get_by_role("button", name="Add condition").click()
        await expect(page.get_by_label("Field of condition 2")).to_be_focused()
        await rebuilt(page, page.get_by_label("Field of condition 2"), "Edad")
        await rebuilt(page, page.get_by_label("Operator of condition 2"), "gte")
        await expect(page.get_by_label("Value of condition 2")).to_have_attribute("type", "number")
        await page.get_by_label("Value of condition 2").fill("30")
        preview = page.locator("#preview")
        await expect(preview.get_by_text("2 contacts match")).to_be_visible()
        await expect(preview.get_by_role("row", name="bea@example.cl")).to_be_visible()
        await expect(preview.get_by_role("row", name="dan@example.cl")).to_have_count(0)
        await console.accessible(page, "virtual-new")

        narrow = await browser.new_page(viewport={"width": 375, "height": 800})
        await console.sign_in(narrow)
        await narrow.goto(f"{console.url}/virtual-profiles/new?base_profile_id={profile_id}")
        await expect(narrow.get_by_label("Field of condition 1")).to_be_visible()
        width = await narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the builder is {width} px wide at 375"
        await console.accessible(narrow, "virtual-new-375")

        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_role("heading", name="Santiago 30+")).to_be_visible()
        await console.reload_until(page, "bea@example.cl")
        members = page.get_by_role("table")
        await expect(members.get_by_role("row", name="ana@example.cl")).to_be_visible()
        await expect(members.get_by_role("row", name="dan@example.cl")).to_have_count(0)
        await console.accessible(page, "virtual-members")

        # dan turns 35, edited on his page: he enters the members a moment later.
        members_url = page.url
        await page.goto(f"{console.url}/contacts/{profile_id}/dan@example.cl")
        await expect(page.get_by_text("In no virtual profile.")).to_be_visible()
        await page.get_by_label("Edad").fill("35")
        await page.get_by_role("button", name="Save", exact=True).click()
        await expect(page.get_by_text("Fields saved.")).to_be_visible()
        await console.reload_until(page, "Santiago 30+ · since")
        await page.goto(members_url)
        await console.reload_until(page, "dan@example.cl")
        await expect(page.get_by_text("3 members")).to_be_visible()

        await page.get_by_label("Search by the start of the email or phone").fill("DA")
        await page.get_by_role("button", name="Search").click()
        await expect(page.get_by_role("table").get_by_role("row")).to_have_count(2)
        await expect(page.get_by_text("1 member", exact=False)).to_be_visible()
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Export CSV").click()
        exported = (await (await download_info.value).path()).read_text()
        assert exported.splitlines()[0].startswith("email,Ciudad,Edad,status")
        assert [line.split(",")[0] for line in exported.splitlines()[1:]] == ["dan@example.cl"]

        await console.go(page, "Virtual Profile")
        await expect(page.get_by_role("row", name="Santiago 30+")).to_be_visible()
        await console.accessible(page, "virtual-list")

        # The regular profile: statistics, edit, export, and a delete refused.
        await console.go(page, "List Profiles")
        await page.get_by_role("link", name="Statistics of Clientes tienda").click()
        await expect(page.get_by_role("heading", name="Clientes tienda")).to_be_visible()
        await console.reload_until(page, "4 contacts")
        await expect(page.get_by_role("img", name="Contacts by status")).to_be_visible()
        await console.accessible(page, "profile-statistics")
        async with page.expect_download() as download_info:
            await page.get_by_role("link", name="Export CSV").click()
        exported = (await (await download_info.value).path()).read_text()
        assert sorted(line.split(",")[0] for line in exported.splitlines()[1:]) == sorted(CONTACTS)

        await page.get_by_role("link", name="Edit").click()
        await page.get_by_label("Description").fill("Compradores de la tienda online")
        await page.get_by_role("button", name="Save").click()
        await expect(page.get_by_text("Saved.")).to_be_visible()
        await expect(page.get_by_label("Description")).to_have_value(
            "Compradores de la tienda online"
        )
        await page.get_by_label("Field name").fill("Región")
        await page.get_by_label("Field type").select_option("text")
        await page.get_by_role("button", name="Add").click()
        await expect(page.get_by_role("row", name="Región")).to_be_visible()
        await console.accessible(page, "profile-edit")
        await page.get_by_role("link", name="Delete field Edad").click()
        await page.get_by_role("button", name="Delete the field").click()
        await expect(page.get_by_role("alert")).to_contain_text("Santiago 30+")
        await console.accessible(page, "profile-field-delete-refused")

        await page.get_by_role("link", name="Delete", exact=True).click()
        await expect(page.get_by_role("heading", name="Delete Clientes tienda?")).to_be_visible()
        await console.accessible(page, "profile-delete")
        await page.get_by_role("button", name="Delete the profile").click()
        refusal = page.get_by_role("alert")
        await expect(refusal.get_by_role("link", name="Santiago 30+")).to_be_visible()
        await console.accessible(page, "profile-delete-refused")
        kept = await api.get(f"{urls['profile']}/v1/profiles/{profile_id}")
        assert kept.status_code == 200
