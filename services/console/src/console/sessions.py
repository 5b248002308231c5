"""The signed-in session, sealed in a cookie: the API key never reaches the browser in clear
(the cookie is encrypted and authenticated, HttpOnly and SameSite=Strict), and no replica keeps
state of its own (ADR 19)."""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "console_session"
LOCALES = ("en", "es")


@dataclass(frozen=True)
class Session:
    """Who is signed in (their API key), the token their forms carry against cross-site
    requests, and the language they chose."""

    api_key: str | None = None
    csrf: str = ""
    locale: str = "en"

    @classmethod
    def anonymous(cls, locale: str = "en") -> Session:
        return cls(csrf=secrets.token_urlsafe(24), locale=locale)

    @property
    def signed_in(self) -> bool:
        return self.api_key is not None

    def signed_in_with(self, api_key: str) -> Session:
        """A new session for `api_key`, with a new CSRF token (none from before sign-in
        stays valid)."""
        return replace(self, api_key=api_key, csrf=secrets.token_urlsafe(24))

    def speaking(self, locale: str) -> Session:
        return replace(self, locale=locale if locale in LOCALES else "en")

    def accepts(self, token: str | None) -> bool:
        """Whether a state-changing request carries this session's CSRF token."""
        return bool(token) and hmac.compare_digest(token or "", self.csrf)


class SessionSeal:
    """Seals sessions into cookie values and opens them, refusing any tampered or older than
    `max_age_seconds`."""

    def __init__(self, key: str | None, *, max_age_seconds: int) -> None:
        self._fernet = Fernet(key.encode() if key else Fernet.generate_key())
        self._max_age = max_age_seconds

    def seal(self, session: Session) -> str:
        return self._fernet.encrypt(json.dumps(asdict(session)).encode()).decode()

    def open(self, sealed: str | None) -> Session | None:
        if not sealed:
            return None
        try:
            data = json.loads(self._fernet.decrypt(sealed.encode(), ttl=self._max_age))
            return Session(**data)
        except (InvalidToken, ValueError, TypeError):
            return None
