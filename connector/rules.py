"""The rule engine: for one record, does a rule want it, to whom, and with what text.

Rules are Jinja2 in a sandbox. `row` is the only variable: a tabular row (header -> cell text)
or a webhook's JSON object. Every template is parsed and compiled once, when the config is
loaded; evaluating a record only renders. A rule that cannot compile is a config error
(RuleSyntaxError, naming the field); a record that cannot render is a `failed` Decision naming
the field and the reason, and never an exception: one bad row must not stop the others.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.environment import Template, TemplateExpression
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from pydantic import BaseModel, Field, field_validator, model_validator

from connector import phones
from connector.errors import ConnectorError, lower_first
from connector.types import STRICT, Duration, SignedDuration
from policies.cap import CapSetting
from policies.window import SendWindow

SEVEN_DAYS = 7 * 86400.0
_REASON_LIMIT = 300  # a status cell is read by a person; a runaway message must not fill it


class RuleConfig(BaseModel):
    """One rule: which records of which sources get an SMS, to whom, with what text."""

    model_config = STRICT
    name: str = Field(min_length=1, description="A unique name; statuses and the ledger use it.")
    source: str | list[str] = Field(description="The source it reads: a name or a list of names.")
    when: str | None = Field(
        default=None,
        description="Jinja2 expression on `row`, e.g. row['Status'] == 'Confirmed'; the record gets an "
        "SMS only when it is true. Default: every record.",
    )
    to: str = Field(description="Jinja2 template of the number, e.g. {{ row['Phone'] }}.")
    country: str | None = Field(
        default=None, description="Region of numbers written without a prefix, e.g. RO or PK."
    )
    message: str = Field(description="Jinja2 template of the SMS text.")
    sink: str = Field(description="The sink that sends it.")
    dedupe_window: Duration = Field(
        default=SEVEN_DAYS,
        description="The same number and text from this rule is not sent again within this long.",
    )
    # Send policies (policies/): each reads its own keys.
    send_window: SendWindow | None = Field(
        default=None,
        description="Quiet hours: outside this window a message waits (pending: quiet hours until ...).",
    )
    send_at: str | None = Field(
        default=None,
        description="Jinja2 template of a date-time, e.g. {{ row['Appointment'] }}: the message waits until "
        "then (+ send_offset).",
    )
    send_offset: SignedDuration = Field(
        default=0.0, description="Moves send_at; may be negative: -1d is the day before."
    )
    expire_after: Duration | None = Field(
        default=None,
        description="Not sent within this long after it was due: skipped: expired.",
    )
    max_per_recipient: CapSetting | None = Field(
        default=None,
        description="At most N messages to one number, from every rule, within PERIOD, e.g. 3/24h.",
    )

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @model_validator(mode="after")
    def _offset_needs_a_time(self) -> RuleConfig:
        if self.send_offset and self.send_at is None:
            raise ValueError("send_offset moves send_at: give send_at too")
        return self

    @field_validator("country")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import phonenumbers  # noqa: PLC0415 - heavy import kept out of the config module's import time

        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a country code that phone numbers know (use RO, PK, ...)")
        return region


class RuleSyntaxError(ConnectorError):
    """A rule's `when`, `to` or `message` does not compile."""

    def __init__(self, field: str, message: str, rule: str = "") -> None:
        self.field = field  # "when", "to" or "message"
        self.message = message
        self.rule = rule
        super().__init__(f"{field}: {message}")


# The record being evaluated, so that a missing-field message can say where it was looked for
# ("row['customer'] has no field 'phone'") instead of Jinja's "'dict object' has no attribute".
_current_row: ContextVar[object] = ContextVar("current_row", default=None)


class _RowUndefined(StrictUndefined):
    """StrictUndefined whose messages speak of the record's fields."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        obj, name = self._undefined_obj, self._undefined_name
        if self._undefined_hint or obj is missing:
            return super()._undefined_message  # the sandbox's refusals carry their own hint
        if isinstance(obj, Mapping):
            return f"{_where(obj)} has no field {name!r}{_fields_hint(obj, name)}"
        if isinstance(obj, Sequence) and not isinstance(obj, str) and isinstance(name, int):
            return f"{_where(obj)} has no element {name} (it has {len(obj)})"
        return super()._undefined_message


def _where(obj: object) -> str:
    """Where `obj` sits in the current record, e.g. row['customer']; only run on the error path."""
    row = _current_row.get()
    queue: list[tuple[object, str]] = [(row, "row")]
    seen = 0
    while queue and seen < 1000:
        node, path = queue.pop(0)
        seen += 1
        if node is obj:
            return path
        if isinstance(node, Mapping):
            queue.extend((value, f"{path}[{key!r}]") for key, value in node.items())
        elif isinstance(node, list | tuple):
            queue.extend((value, f"{path}[{i}]") for i, value in enumerate(node))
    return "the value"


def _fields_hint(obj: Mapping[Any, Any], name: object) -> str:
    keys = [str(k) for k in obj]
    if not keys:
        return " (it has no fields)"
    close = difflib.get_close_matches(str(name), keys, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
    return f" (fields: {shown})"


def _finalize(value: object) -> object:
    # A JSON null must not become the word "None" in a paid SMS or in a phone number.
    return "" if value is None else value


# One environment for every rule, shared read-only after import: Jinja renders concurrently safely.
# trim_blocks/lstrip_blocks: a `{% if %}` on its own line of a YAML block leaves no blank line in
# an SMS, where every character is paid for. Autoescape is off: this is SMS text, not HTML.
_ENV = ImmutableSandboxedEnvironment(
    undefined=_RowUndefined,
    autoescape=False,
    finalize=_finalize,
    trim_blocks=True,
    lstrip_blocks=True,
)
# Jinja's default globals (range, dict, namespace, lipsum, cycler, joiner) go: an SMS template
# has no use for them, and copying them into every render's context doubled the cost of a render.
# Filters (default, title, truncate, replace, ...) and tests stay.
_ENV.globals.clear()
_KNOWN_NAMES = frozenset({"row"})


@dataclass(frozen=True, slots=True)
class Decision:
    """What a rule decided for one record.

    `text` is the rendered message whenever it rendered, even if the number is unusable, so that
    `connector preview` can show both; `to` is set only when the record can be sent.
    """

    rule: CompiledRule
    to: str | None  # E.164 when ok
    text: str | None
    problem: str | None  # the `failed` reason: template error or number problem; None when ok
    raw_to: str  # the rendered recipient before normalisation ("" if rendering failed)
    send_at: str | None = None  # the rendered `send_at`, when the rule has one

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, eq=False)
class CompiledRule:
    config: RuleConfig
    name: str
    sink: str
    sources: frozenset[str]
    _when: TemplateExpression | None = field(repr=False)
    _to: Template = field(repr=False)
    _message: Template = field(repr=False)
    _combined: Template | None = field(default=None, repr=False)
    _send_at: Template | None = field(default=None, repr=False)

    def evaluate(self, row: Mapping[str, Any]) -> Decision | None:
        """The decision for one record, or None when `when` is false (the record gets no status).

        Never raises for any row. This is the one place that catches every exception, because
        templates may do arbitrary (sandboxed) things with data nobody validated, and one bad
        row must never stop the others.
        """
        token = _current_row.set(row)
        try:
            return self._evaluate(row)
        except Exception as exc:  # noqa: BLE001 - the documented boundary above
            return Decision(self, None, None, _cap(f"internal error: {_describe(exc)}"), "")
        finally:
            _current_row.reset(token)

    def _evaluate(self, row: Mapping[str, Any]) -> Decision | None:
        rendered = self._render_at_once(row)
        if rendered is not None:
            if not rendered:
                return None
            return self._decide(rendered[0], rendered[1], row)
        # The reference path, one field at a time: it names the field at fault in every problem.
        if self._when is not None:
            try:
                wanted = bool(self._when(row=row))
            except Exception as exc:  # noqa: BLE001 - a failing `when` fails the record, see evaluate
                return Decision(self, None, None, _cap(f"when: {_describe(exc)}"), "")
            if not wanted:
                return None
        raw_to, to_problem = _render("to", self._to, row)
        text, text_problem = _render("message", self._message, row)
        if to_problem is not None:
            return Decision(self, None, None if text_problem else text, to_problem, "")
        if text_problem is not None:
            return Decision(self, None, None, text_problem, raw_to)
        return self._decide(raw_to, text, row)

    def _render_at_once(self, row: Mapping[str, Any]) -> tuple[str, str] | tuple[()] | None:
        """`when`, `to` and `message` in ONE render (a third of the cost of three); None: use the
        reference path, which also runs whenever anything raises, to say which field is at fault."""
        if self._combined is None:
            return None
        try:
            out = self._combined.render(row=row)
        except Exception:  # noqa: BLE001 - the reference path reports it, field by field
            return None
        if not out:
            return ()
        parts = out.split(_SEPARATOR)
        if len(parts) != 3 or parts[0]:  # the data itself held the separator: take the slow road
            return None
        return parts[1].strip(), parts[2].strip()

    def _decide(self, raw_to: str, text: str, row: Mapping[str, Any]) -> Decision:
        number = phones.normalise(raw_to, self.config.country)
        if number.problem is not None:
            return Decision(self, None, text, number.problem, raw_to)
        if not text:
            return Decision(self, None, text, "message is empty", raw_to)
        if self._send_at is None:
            return Decision(self, number.e164, text, None, raw_to)
        when, problem = _render("send_at", self._send_at, row)
        if problem is not None:
            return Decision(self, None, text, problem, raw_to)
        return Decision(self, number.e164, text, None, raw_to, when)


def _render(name: str, template: Template, row: Mapping[str, Any]) -> tuple[str, str | None]:
    try:
        return template.render(row=row).strip(), None
    except Exception as exc:  # noqa: BLE001 - becomes the record's `failed` reason, see evaluate
        return "", _cap(f"{name}: {_describe(exc)}")


def _describe(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, TemplateError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _cap(reason: str) -> str:
    return reason if len(reason) <= _REASON_LIMIT else reason[: _REASON_LIMIT - 3] + "..."


def compile_rule(rule: RuleConfig) -> CompiledRule:
    """Compile the rule's templates once; raises RuleSyntaxError naming the field at fault."""
    try:
        when = _compile_when(rule.when)
        to = _compile_template("to", rule.to)
        message = _compile_template("message", rule.message)
        send_at = None if rule.send_at is None else _compile_template("send_at", rule.send_at)
    except RuleSyntaxError as exc:
        raise RuleSyntaxError(exc.field, exc.message, rule.name) from None
    return CompiledRule(
        rule,
        rule.name,
        rule.sink,
        frozenset(rule.sources),
        when,
        to,
        message,
        _compile_combined(rule),
        send_at,
    )


def compile_rules(rules: Sequence[RuleConfig]) -> list[CompiledRule]:
    """Every rule compiled, in order; the first that does not compile raises RuleSyntaxError."""
    return [compile_rule(rule) for rule in rules]


def rules_by_source(rules: Sequence[CompiledRule]) -> dict[str, list[CompiledRule]]:
    """The rules of each source, in the config's order."""
    by_source: dict[str, list[CompiledRule]] = defaultdict(list)
    for rule in rules:
        for source in rule.sources:
            by_source[source].append(rule)
    return by_source


def text_problems(rule: Mapping[str, object]) -> list[tuple[str, str]]:
    """(field, message) for every field of a rule as written (not yet validated) that does not
    compile: the config loader reports them even when other parts of the file are invalid."""
    problems: list[tuple[str, str]] = []
    for name in ("when", "to", "message", "send_at"):
        text = rule.get(name)
        if not isinstance(text, str):
            continue
        try:
            if name == "when":
                _compile_when(text)
            else:
                _compile_template(name, text)
        except RuleSyntaxError as exc:
            problems.append((exc.field, exc.message))
    return problems


_SEPARATOR = "\x1e"  # ASCII record separator: never typed in a template, rare in data (checked)


def _compile_combined(rule: RuleConfig) -> Template | None:
    """The three fields as one template, rendering "" when `when` is false, else SEP to SEP message.

    Only an optimisation: each field also compiled alone, and those stay the reference. A template
    that carries state from one field into the next (`{% set %}`) is left to the reference path.
    """
    body = f"{_SEPARATOR}{rule.to}{_SEPARATOR}{rule.message}"
    source = body if rule.when is None else f"{{% if ({rule.when}) %}}{body}{{% endif %}}"
    fields = (rule.to, rule.message, rule.when or "")
    if any("{%" in text or _SEPARATOR in text for text in fields):
        return None
    try:
        return _ENV.from_string(source)
    except TemplateSyntaxError:
        return None


def _compile_template(name: str, source: str) -> Template:
    try:
        ast = _ENV.parse(source)
        _check_names(name, ast)
        return _ENV.from_string(ast)
    except TemplateSyntaxError as exc:
        raise RuleSyntaxError(name, _syntax_message(exc, source)) from None


def _compile_when(source: str | None) -> TemplateExpression | None:
    if source is None:
        return None
    stripped = source.strip()
    if not stripped:
        raise RuleSyntaxError("when", "empty expression (leave `when` out to take every record)")
    if stripped.startswith("{{") and stripped.endswith("}}"):
        raise RuleSyntaxError(
            "when", "an expression is written without {{ }}: e.g. row['Status'] == 'Confirmed'"
        )
    try:
        _check_names("when", _parse_expression(source))
        # undefined_to_none=False: `when: row['Missing']` must fail the record, not quietly skip it.
        return _ENV.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise RuleSyntaxError("when", _syntax_message(exc, source)) from None


def _parse_expression(source: str) -> nodes.Template:
    """The expression as a template, only to check its names; compile_expression parses it again."""
    parser = Parser(_ENV, source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("unexpected text after the expression", parser.stream.current.lineno)
    ast = nodes.Template([nodes.Output([expr])], lineno=1)
    ast.set_environment(_ENV)
    return ast


def _check_names(name: str, ast: nodes.Template) -> None:
    # Caught at load time rather than on every row: `{{ Name }}` for `{{ row['Name'] }}`.
    unknown = sorted(meta.find_undeclared_variables(ast) - _KNOWN_NAMES)
    if unknown:
        raise RuleSyntaxError(
            name, f"unknown name {unknown[0]!r} (the record is row, e.g. row[{unknown[0]!r}])"
        )


def _syntax_message(exc: TemplateSyntaxError, source: str) -> str:
    message = f"template syntax error: {lower_first(exc.message or 'invalid syntax')}"
    return f"{message} (line {exc.lineno} of the template)" if "\n" in source.strip() else message
