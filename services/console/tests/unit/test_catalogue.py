"""Every message the console shows has its Spanish translation, and the vendored scripts are
the pinned ones."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from console import backends, web
from console.i18n import catalogue

PACKAGE = Path(web.__file__).parent
CALLS = re.compile(r"""_\(\s*(["'])(.+?)\1""")


def messages() -> set[str]:
    found = {
        match.group(2)
        for path in [*PACKAGE.glob("templates/*.html"), *PACKAGE.glob("*.py")]
        for match in CALLS.finditer(path.read_text())
    }
    found |= {title for _, title, _ in web.SECTIONS}
    found |= set(web.TYPE_LABELS.values()) | set(web.FIELD_TYPES)
    found |= {backends.PROFILES, backends.CONTACTS, backends.IMPORTS, backends.SEGMENTS}
    return found | {backends.LOGS}


def test_every_message_has_its_spanish_translation() -> None:
    spanish = catalogue("es")
    missing = sorted(message for message in messages() if not spanish.get(message))
    assert missing == []
    placeholders = re.compile(r"\{\w+\}")
    for english, translated in spanish.items():
        assert sorted(placeholders.findall(english)) == sorted(placeholders.findall(translated))


def test_the_vendored_scripts_match_their_recorded_checksums() -> None:
    rows = (PACKAGE / "static" / "VENDORED.md").read_text().splitlines()
    recorded = [row.split("|") for row in rows if row.startswith("| ") and ".js" in row]
    assert recorded
    for row in recorded:
        name, checksum = row[1].strip(), row[5].strip()
        assert hashlib.sha256((PACKAGE / "static" / name).read_bytes()).hexdigest() == checksum
