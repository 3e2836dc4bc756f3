"""The rule-test files (`*.test.yaml`, SPEC "Rule tests"): their schema, and how one is read.

A file is read like config.yaml (connector/config_loader.py): YAML with the line of every key,
pydantic models that refuse unknown keys, every problem located as `file:line key.path: message`.
Then it is checked against the config: the sources and rules it names must exist.

Values are taken as written. A row of a tabular source (CSV folder, sheet) holds cell text, so
`Phone: 0740123456` is the text `0740123456` (not the number YAML would make of it: octal!),
`Date: 2026-12-08` the text `2026-12-08`, and an empty value or `null` an empty cell. A webhook's
row is JSON: numbers, booleans, null, lists and objects stay what they are (a date, which JSON does
not have, is its text). `to`, `message` and the reasons are text as written too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, WithJsonSchema, model_validator

from connector.config import KeyPath, missing_name
from connector.config_loader import LoadedConfig, YamlDocument, read_yaml, validate_located
from connector.errors import ConfigError, ConfigProblem
from connector.types import STRICT
from sources.webhook import WebhookConfig

PATTERN = "*.test.yaml"
OUTCOMES = ("failed", "skipped", "pending")


def _moment(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is not an ISO date-time (write 2026-12-07T09:00, or 2026-12-07T09:00+02:00 "
            "with a zone; without one it is in the config's timezone)"
        ) from None


Moment = Annotated[
    datetime,
    BeforeValidator(_moment),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*"
            r"(Z|[+-]\d{2}(:?\d{2})?)?\s*$",
            "examples": ["2026-12-07T09:00", "2026-12-07T09:00:00+02:00", "2026-12-07T07:00:00Z"],
        }
    ),
]


class Expected(BaseModel):
    """One message a rule should make of the row: its number and text, or why it is not sent now."""

    model_config = STRICT
    rule: str | None = Field(
        default=None, description="The rule that makes it; optional when one rule wants the row."
    )
    to: str | None = Field(
        default=None,
        description="The recipient, in E.164 (+40740123456) or as the sink writes it (PK: 923001234567).",
    )
    message: str | None = Field(default=None, description="The exact text of the SMS.")
    segments: int | None = Field(default=None, ge=1, description="How many SMS parts the text takes.")
    failed: str | None = Field(
        default=None, description="It fails: a part of the reason, any case (e.g. fixed-line)."
    )
    skipped: str | None = Field(
        default=None, description="It is skipped: a part of the reason, any case (e.g. opted out, expired)."
    )
    pending: str | None = Field(
        default=None,
        description="It waits: a part of the reason, any case (e.g. quiet hours, scheduled for 2026-12-07).",
    )

    @model_validator(mode="after")
    def _one_outcome(self) -> Expected:
        given = [name for name in OUTCOMES if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of failed, skipped or pending, not {' and '.join(given)}")
        return self

    @property
    def outcome(self) -> tuple[str, str]:
        """(state, a part of its reason): ("sent", "") when none of failed/skipped/pending is given."""
        for name in OUTCOMES:
            value = getattr(self, name)
            if value is not None:
                return name, value
        return "sent", ""


class Case(BaseModel):
    """One row and the messages it should give."""

    model_config = STRICT
    name: str = Field(min_length=1, description="What the case shows; printed with PASS or FAIL.")
    source: str | None = Field(
        default=None, description="The source the row comes from; optional when the config has one source."
    )
    row: dict[str, Any] = Field(
        description="The record: column -> cell text for CSV and sheets, the JSON object for a webhook."
    )
    at: Moment | None = Field(
        default=None,
        description="Judge the send policies (windows, scheduled sends, expiry) as if now were this time; "
        "without a zone it is in the config's timezone. Default: now.",
    )
    expect: list[Expected] = Field(
        description="One entry per rule that wants the row, in any order; [] means no SMS."
    )


class RuleTestFile(BaseModel):
    """A `*.test.yaml` file beside config.yaml, run by `connector test`."""

    model_config = STRICT
    cases: list[Case] = Field(description="The test cases, each a row in and the messages expected out.")


@dataclass(frozen=True, slots=True)
class PlannedCase:
    """A case checked against the config, ready to run."""

    file: str
    line: int | None
    name: str
    source: str
    row: dict[str, Any]  # as the source would hold it: cell text, or JSON values
    at: datetime | None  # naive: in the config's timezone
    expect: tuple[Expected, ...]
    tabular: bool  # a CSV folder's or a sheet's row (cell text), else a webhook's JSON object

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True, slots=True)
class TestFile:
    path: Path
    cases: list[PlannedCase]
    problems: list[ConfigProblem]


def find_test_files(loaded: LoadedConfig, named: Sequence[str] = ()) -> list[Path]:
    """The files named, else every `*.test.yaml` in the config file's folder."""
    if named:
        return [Path(name) for name in named]
    return [_shown(path) for path in sorted(loaded.base_dir.glob(PATTERN))]


def _shown(path: Path) -> Path:
    """Relative to the working folder when it is below it: shorter in every message."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def read_test_file(path: Path, loaded: LoadedConfig) -> TestFile:
    """The file's cases, or the problems that keep it from running (every one, located)."""
    try:
        data, doc = read_yaml(path, what="test file", top_level="a test file is a mapping with `cases:`")
    except ConfigError as exc:
        return TestFile(path, [], exc.problems)
    if data is None:
        return TestFile(path, [], doc.sorted_problems())
    _as_written(data, doc)
    parsed = validate_located(RuleTestFile, data, doc)
    # The sources and rules named are checked even when other cases have problems.
    valid = list(enumerate(parsed.cases)) if parsed is not None else _valid_cases(data)
    cases = _plan(valid, loaded, doc)
    if doc.problems:
        return TestFile(path, [], doc.sorted_problems())
    return TestFile(path, cases, [])


_TEXTS = ("name", "source", "rule", "to", "message", "failed", "skipped", "pending", "at")


def _as_written(data: Any, doc: YamlDocument) -> None:
    """Text fields as written: `to: +40740123456` stays that, not the number YAML reads."""
    cases = data.get("cases") if isinstance(data, dict) else None
    for i, case in enumerate(cases if isinstance(cases, list) else []):
        if not isinstance(case, dict):
            continue
        _texts_of(case, ("cases", i), doc)
        expect = case.get("expect")
        for j, entry in enumerate(expect if isinstance(expect, list) else []):
            if isinstance(entry, dict):
                _texts_of(entry, ("cases", i, "expect", j), doc)


def _texts_of(mapping: dict[str, Any], path: KeyPath, doc: YamlDocument) -> None:
    for key in _TEXTS:
        value = mapping.get(key)
        written = doc.scalars.get((*path, key))
        if value is not None and not isinstance(value, str) and written is not None:
            mapping[key] = written


def _valid_cases(data: Any) -> list[tuple[int, Case]]:
    """The cases that are valid by themselves (the file's problems are reported already)."""
    cases = data.get("cases") if isinstance(data, dict) else None
    valid: list[tuple[int, Case]] = []
    for i, case in enumerate(cases if isinstance(cases, list) else []):
        try:
            valid.append((i, Case.model_validate(case)))
        except ValidationError:
            continue
    return valid


def _plan(cases: Sequence[tuple[int, Case]], loaded: LoadedConfig, doc: YamlDocument) -> list[PlannedCase]:
    config = loaded.config
    sources = sorted(config.sources)
    rules_of: dict[str, list[str]] = {name: [] for name in sources}
    for rule in loaded.rules:
        for name in rule.sources:
            rules_of.setdefault(name, []).append(rule.name)
    planned: list[PlannedCase] = []
    named: dict[str, int] = {}
    for i, case in cases:
        here: KeyPath = ("cases", i)
        if case.name in named:
            doc.add((*here, "name"), f"a case named {case.name!r} already exists (cases.{named[case.name]})")
        named.setdefault(case.name, i)
        source = case.source
        if source is None:
            if len(sources) != 1:
                listed = f"it has {len(sources)}: {', '.join(sources)}" if sources else "it has none"
                doc.add((*here, "source"), f"field required: name the source of the row ({listed})")
                continue
            source = sources[0]
        elif source not in config.sources:
            doc.add((*here, "source"), missing_name("source", source, set(sources)))
            continue
        _check_rules(case.expect, source, rules_of[source], (*here, "expect"), doc)
        tabular = not isinstance(config.sources[source], WebhookConfig)
        row = _cells(case.row, (*here, "row"), doc) if tabular else _json(case.row, (*here, "row"), doc)
        planned.append(
            PlannedCase(
                doc.file, doc.line(here), case.name, source, row, case.at, tuple(case.expect), tabular
            )
        )
    return planned


def _check_rules(
    expect: Sequence[Expected], source: str, rules: Sequence[str], path: KeyPath, doc: YamlDocument
) -> None:
    seen: dict[str, int] = {}
    for j, entry in enumerate(expect):
        if entry.rule is None:
            continue
        if entry.rule not in rules:
            message = missing_name("rule", entry.rule, set(rules))
            doc.add((*path, j, "rule"), message.replace(" (", f" for source {source!r} (", 1))
        elif entry.rule in seen:
            doc.add(
                (*path, j, "rule"),
                f"rule {entry.rule!r} is expected twice (expect.{seen[entry.rule]}): "
                "a rule makes at most one message of a row",
            )
        seen.setdefault(entry.rule, j)


def _cells(row: Mapping[str, Any], path: KeyPath, doc: YamlDocument) -> dict[str, Any]:
    """A tabular row: each value the text a cell would hold (as written; null or empty: "")."""
    cells: dict[str, Any] = {}
    for column, value in row.items():
        if isinstance(value, dict | list):
            doc.add((*path, column), "a cell holds one value (text or a number), not a list or mapping")
        elif value is None:
            cells[column] = ""
        elif isinstance(value, str):
            cells[column] = value
        else:
            cells[column] = doc.scalars.get((*path, column), str(value))
    return cells


def _json(value: Any, path: KeyPath, doc: YamlDocument) -> Any:
    """A webhook's row: JSON values as they are; a YAML date or time (not JSON) as written."""
    if isinstance(value, dict):
        return {key: _json(item, (*path, key), doc) for key, item in value.items()}
    if isinstance(value, list):
        return [_json(item, (*path, i), doc) for i, item in enumerate(value)]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return doc.scalars.get(path, str(value))
