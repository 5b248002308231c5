"""Structured JSON log lines carrying the service, request id and account id, and, while
tracing is on (`contacts_shared.tracing`) and a span is current, its trace and span ids."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from contacts_shared import tracing

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
account_id_var: ContextVar[str | None] = ContextVar("account_id", default=None)

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """Formats each record as one JSON object; `extra=` keys become top-level fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := request_id_var.get()) is not None:
            line["request_id"] = request_id
        if (account_id := account_id_var.get()) is not None:
            line["account_id"] = account_id
        if (ids := tracing.log_ids()) is not None:  # off: one global read
            line["trace_id"], line["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class OncePerInterval(logging.Filter):
    """Passes each message template of the loggers under `names` once per `seconds` (others
    all); the next one passed says how many were held back. While a broker is away, aiokafka
    warns of every reconnection attempt (about 120 lines a second): one a template every few
    seconds tells as much. A handler's filter: a logger's own sees none of its children's."""

    def __init__(self, seconds: float, names: tuple[str, ...]) -> None:
        super().__init__()
        self.seconds = seconds
        self.names = names
        self._last: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.names):
            return True
        template = (record.name, record.msg)
        last, held = self._last.get(template, (float("-inf"), 0))
        if record.created - last < self.seconds:
            self._last[template] = (last, held + 1)
            return False
        self._last[template] = (record.created, 0)
        if held:
            record.held_back = held
        return True


# Third-party clients, and how often they may repeat one warning.
CLIENTS = ("aiokafka", "pymongo")
CLIENT_WARNING_SECONDS = 10.0


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every logger's records to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(OncePerInterval(CLIENT_WARNING_SECONDS, CLIENTS))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in CLIENTS:
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
    # uvicorn installs plain-text handlers of its own: route its records through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our request middleware logs each request with its ids; uvicorn's access line would repeat it.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
