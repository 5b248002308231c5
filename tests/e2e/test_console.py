"""The web console in Debian's headless Chromium, against the real services on the real stack:
a marketer signs in, creates a profile with three fields and deletes one, finds it in List
Profiles, switches to Spanish and signs out; another account's key sees none of it. axe-core
checks every page for serious or critical accessibility violations.

With `CONTACTS_SCREENSHOTS=<folder>` the run also saves each page at 1280x800 there
(`make screenshots` writes docs/screenshots/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AXE = REPO / ".local" / "browser" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = os.environ.get("CONTACTS_SCREENSHOTS")


async def accessible(page: Page, name: str) -> None:
    """No serious or critical axe-core violation on the page as it stands (and, when asked, a
    screenshot of it)."""
    assert AXE.exists(), "axe-core is missing: `make setup` installs it"
    await page.add_script_tag(path=str(AXE))
    violations = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => ['serious', 'critical'].includes(v.impact))"
        ".map(v => `${v.id}: ${v.help} (${v.nodes.map(n => n.target).join(' ')})`)"
    )
    assert violations == [], f"{name}: {violations}"
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


@pytest.fixture
def console_url(service_process: Any, platform_env: Any, unique: str) -> str:
    """profile-svc, contact-svc, segment-svc and the console as processes of the test's own;
    API keys `console-key` (account acct-<unique>) and `other-key` (another account)."""
    envs = platform_env("console")
    keys = {"CONTACTS_API_KEYS": f"console-key=acct-{unique},other-key=other-{unique}"}
    profile_svc = service_process("profile_svc.app:create_app", envs["profile"] | keys)
    contact_svc = service_process("contact_svc.app:create_app", envs["contact"] | keys)
    segment_svc = service_process("segment_svc.app:create_app", envs["segment"] | keys)
    console = service_process(
        "console.app:create_app",
        {
            "CONTACTS_ENVIRONMENT": "test",
            "CONTACTS_PROFILE_SVC_URL": profile_svc.url,
            "CONTACTS_CONTACT_SVC_URL": contact_svc.url,
            "CONTACTS_SEGMENT_SVC_URL": segment_svc.url,
        },
    )
    for process in (profile_svc, contact_svc, segment_svc, console):
        process.start()
    return console.url


async def go(page: Page, section: str) -> None:
    """Open a section from the navigation."""
    await page.get_by_role("navigation").get_by_role("link", name=section).click()
    await expect(page.get_by_role("heading", name=section)).to_be_visible()


async def sign_in(page: Page, console_url: str, key: str) -> None:
    await page.goto(f"{console_url}/profiles")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="List Profiles")).to_be_visible()


async def test_a_marketer_creates_a_profile_finds_it_switches_language_and_signs_out(
    browser: Browser, console_url: str
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    await page.goto(f"{console_url}/profiles")
    await expect(page).to_have_url(f"{console_url}/sign-in?next=/profiles")
    await accessible(page, "sign-in")
    await page.get_by_label("API key").fill("not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text("This key is not accepted.")).to_be_visible()
    await sign_in(page, console_url, "console-key")
    await accessible(page, "list-profiles-empty")

    await go(page, "New Profile")
    await page.get_by_label("Name", exact=True).fill("Clientes tienda")
    await page.get_by_label("Description").fill("Compradores online")
    for name, field_type in (("Ciudad", "text"), ("Edad", "number"), ("Nacimiento", "date")):
        await page.get_by_role("button", name="Add").click()
        rows = page.locator("input[name=field_name]")
        await rows.last.fill(name)
        await page.locator("select[name=field_type]").last.select_option(field_type)
    await expect(page.locator("input[name=field_name]")).to_have_count(3)
    await accessible(page, "new-profile")
    await page.get_by_role("button", name="Delete field 2").click()
    await expect(page.locator("input[name=field_name]")).to_have_count(2)
    await page.get_by_role("button", name="Save").click()

    await expect(page.get_by_role("heading", name="List Profiles")).to_be_visible()
    row = page.get_by_role("row", name="Clientes tienda")
    await expect(row).to_contain_text("Compradores online")
    await expect(row).to_contain_text("Regular")
    await accessible(page, "list-profiles")
    profile = (await page.context.cookies())[0]
    assert "console-key" not in str(profile["value"]) and profile["httpOnly"]
    assert "console-key" not in await page.content()

    # A name taken already: the refusal is shown next to the name.
    await go(page, "New Profile")
    await page.get_by_label("Name", exact=True).fill("Clientes tienda")
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator("#name_error")).to_be_visible()
    await accessible(page, "new-profile-refused")

    await page.get_by_label("Language").select_option("es")
    await page.get_by_role("button", name="Change").click()
    await expect(page.get_by_role("heading", name="Nuevo Perfil")).to_be_visible()
    await go(page, "Listar Perfiles")
    await accessible(page, "list-profiles-es")
    await page.get_by_role("button", name="Cerrar sesión").click()
    await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()
    await page.goto(f"{console_url}/profiles")
    await expect(page.get_by_role("heading", name="Iniciar sesión")).to_be_visible()


async def test_another_accounts_key_sees_none_of_the_first_accounts_profiles(
    browser: Browser, console_url: str
) -> None:
    mine = await browser.new_page()
    await sign_in(mine, console_url, "console-key")
    await go(mine, "New Profile")
    await mine.get_by_label("Name", exact=True).fill("Solo mío")
    await mine.get_by_role("button", name="Save").click()
    await expect(mine.get_by_role("row", name="Solo mío")).to_be_visible()

    theirs = await browser.new_page()  # another context: no cookie of the first
    await sign_in(theirs, console_url, "other-key")
    await expect(theirs.get_by_text("No profile yet.")).to_be_visible()
    await expect(theirs.get_by_role("row", name="Solo mío")).to_have_count(0)
