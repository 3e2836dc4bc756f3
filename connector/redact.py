"""The one redactor: secrets out of every text a person or a machine will read.

Configured once from the config's secrets (`ConnectorConfig.secrets()`), it serves structlog as a
processor, the standard library's logging (httpx, aiohttp, watchdog) through the same chain, and
the sinks for the reasons they write into statuses. A secret is also caught URL-encoded, because a
provider that takes its key in the query string (Robo SMS Pakistan's check-balance) puts it in
every logged URL that way. Config errors use it with other replacements: a value that came from
the environment is shown as the `${NAME}` it was written as.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from structlog.typing import EventDict, WrappedLogger

REDACTED = "***"
SHORTEST = 4  # a "secret" shorter than this would be replaced inside ordinary words
# Field names whose values are secrets whatever they hold.
SECRET_FIELDS = frozenset({"token", "secret", "password", "authorization", "api_key", "key_value"})


class Redactor:
    """Replaces each secret (plain or URL-encoded) wherever it appears, and secret-named fields."""

    def __init__(self, secrets: Iterable[str] = (), *, shown_as: Mapping[str, str] | None = None) -> None:
        replacements: dict[str, str] = {}
        for secret in secrets:
            if len(secret) >= SHORTEST:
                for form in (secret, quote(secret, safe=""), quote_plus(secret)):
                    replacements[form] = REDACTED
        for value, written in (shown_as or {}).items():
            if value:
                replacements[value] = written
        # Longest first: a secret that contains another is replaced whole.
        self._pairs = sorted(replacements.items(), key=lambda pair: len(pair[0]), reverse=True)

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def text(self, value: str) -> str:
        for secret, shown in self._pairs:
            if secret in value:
                value = value.replace(secret, shown)
        return value

    def value(self, value: Any) -> Any:
        """Strings, and the strings inside mappings and sequences; secret-named fields wholesale."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: REDACTED if str(k).lower() in SECRET_FIELDS else self.value(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value

    def __call__(self, _logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
        """As a structlog processor."""
        for name in list(event):
            event[name] = REDACTED if name.lower() in SECRET_FIELDS else self.value(event[name])
        return event

    def filter(self, record: logging.LogRecord) -> bool:
        """As a standard-library logging filter: the record itself is rewritten, so every handler
        (not only ours) gets it without the secret."""
        text = record.getMessage()
        scrubbed = self.text(text)
        if scrubbed != text:
            record.msg, record.args = scrubbed, ()
        return True
