"""The console's words in English and Spanish, from one message catalogue (gettext `.po`,
read with Babel), and numbers and dates in the chosen locale."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LOCALE_DIR = Path(__file__).parent / "locale"

Translate = Callable[..., str]


@cache
def catalogue(locale: str) -> dict[str, str]:
    """The translations of `locale` by English message (English itself: none), from every
    `.po` file of the locale (one per part of the console, merged)."""
    translations: dict[str, str] = {}
    for path in sorted((LOCALE_DIR / locale / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as po:
            translations |= {
                str(message.id): str(message.string)
                for message in read_po(po)
                if message.id and message.string
            }
    return translations


def N_(message: str) -> str:  # noqa: N802 - gettext's name for a message marked, not translated
    """Marks a message for the catalogue (test_catalogue finds it); the template translates it
    where it is shown."""
    return message


def translator(locale: str) -> Translate:
    """`translate(message, **fields)`: the message in `locale`, its `{fields}` filled."""
    messages = catalogue(locale)

    def translate(message: str, **fields: Any) -> str:
        text = messages.get(message, message)
        return text.format(**fields) if fields else text

    return translate


def number(value: float, locale: str) -> str:
    return format_decimal(value, locale=locale)


def when(value: datetime | str | None, locale: str) -> str:
    if value is None:
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return format_datetime(moment, format="medium", locale=locale)


def day(value: date | str, locale: str) -> str:
    return format_date(
        date.fromisoformat(value) if isinstance(value, str) else value, locale=locale
    )
