"""The exception tree, drawn once.

ConnectorError
 +-- ConfigError          invalid config.yaml; carries every problem with file, line and key path
 +-- SourceError          a source cannot be read at all (not one bad row: that is a status)
 +-- SinkError            a sink cannot be used
 |    +-- AccountError    the provider refused the account (token, credits, suspended, IP, mask)
 +-- LedgerUnavailable    the ledger cannot be reached, or its schema is newer than this code
 +-- Fenced               raised by `on_sending`: this instance no longer owns those messages (its
                          lease lapsed, another instance took them); the sink sends none of them

A provider's answer to one send is never raised: the sinks turn it into an Outcome (sent, failed,
held, unknown), and retries of "not taken" answers happen inside the sink (sinks/http.py).
"""

from __future__ import annotations

from dataclasses import dataclass


class ConnectorError(Exception):
    """Base of every error this product raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file, located for a person to fix."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(ConnectorError):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SourceError(ConnectorError):
    pass


class SinkError(ConnectorError):
    pass


class AccountError(SinkError):
    pass


class LedgerUnavailable(ConnectorError):
    pass


class Fenced(ConnectorError):
    """Not this instance's to send (any more): nothing left, and nothing is to be recorded."""


def lower_first(text: str) -> str:
    """A library's sentence as the tail of ours: "Field required" -> "field required"; an acronym
    such as "URL ..." keeps its capitals."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text
