"""The web console in Debian's headless Chromium, against the real services on the real stack:
a marketer signs in, creates a profile with three fields and deletes one, finds it in List
Profiles, switches to Spanish and signs out; another account's key sees none of it. axe-core
checks every page for serious or critical accessibility violations.

With `CONTACTS_SCREENSHOTS=<folder>` the run also saves each page at 1280x800 there."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, expect

pytestmark = pytest.mark.integration


async def test_a_marketer_creates_a_profile_finds_it_switches_language_and_signs_out(
    browser: Browser, console: Any
) -> None:
    console_url = console.url
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(f"{console_url}/profiles")
    await expect(page).to_have_url(f"{console_url}/sign-in?next=/profiles")
    await console.accessible(page, "sign-in")
    await page.get_by_label("API key").fill("not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("This key is not accepted.")).to_be_visible()
    await console.sign_in(page)
    await console.accessible(page, "list-profiles-empty")

    await console.go(page, "New Profile")
    await page.get_by_label("Name", exact=True).fill("Clientes tienda")
    await page.get_by_label("Description").fill("Compradores online")
    for name, field_type in (("Ciudad", "text"), ("Edad", "number"), ("Nacimiento", "date")):
        await page.get_by_role("button", name="Add").click()
        rows = page.locator("input[name=field_name]")
        await rows.last.fill(name)
        await page.locator("select[name=field_type]").last.select_option(field_type)
    await expect(page.locator("input[name=field_name]")).to_have_count(3)
    await console.accessible(page, "new-profile")
    await page.get_by_role("button", name="Delete field 2").click()
    await expect(page.locator("input[name=field_name]")).to_have_count(2)
    await page.get_by_role("button", name="Save").click()

    await expect(page.get_by_role("heading", name="List Profiles")).to_be_visible()
    row = page.get_by_role("row", name="Clientes tienda")
    await expect(row).to_contain_text("Compradores online")
    await expect(row).to_contain_text("Regular")
    await console.accessible(page, "list-profiles")
    profile = (await page.context.cookies())[0]
    assert "console-key" not in str(profile["value"]) and profile["httpOnly"]
    assert "console-key" not in await page.content()

    # A name taken already: the refusal is shown next to the name.
    await console.go(page, "New Profile")
    await page.get_by_label("Name", exact=True).fill("Clientes tienda")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#name_error")).to_be_visible()
    await console.accessible(page, "new-profile-refused")

    await page.get_by_label("Language").select_option("es")
    await page.get_by_role("button", name="Change").click()
    await expect(page.get_by_role("heading", name="Nuevo Perfil")).to_be_visible()
    await console.go(page, "Listar Perfiles")
    await console.accessible(page, "list-profiles-es")
    await page.get_by_role("button", name="Cerrar sesión").click()
    await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()
    await page.goto(f"{console_url}/profiles")
    await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()


async def test_another_accounts_key_sees_none_of_the_first_accounts_profiles(
    browser: Browser, console: Any
) -> None:
    mine = await browser.new_page()
    await console.sign_in(mine)
    await console.go(mine, "New Profile")
    await mine.get_by_label("Name", exact=True).fill("Solo mío")
    await mine.get_by_role("button", name="Save").click()
    await expect(mine.get_by_role("row", name="Solo mío")).to_be_visible()

    theirs = await browser.new_page()  # another context: no cookie of the first
    await console.sign_in(theirs, "other-key")
    await expect(theirs.get_by_text("No profile yet.")).to_be_visible()
    await expect(theirs.get_by_role("row", name="Solo mío")).to_have_count(0)
