from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from connector import rules
from connector.config import RuleConfig
from connector.rules import CompiledRule, Decision, RuleSyntaxError, compile_rule, compile_rules

MESSAGE = "Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed."
ROW = {"Phone": "0740123456", "Name": "Ana", "Order ID": "A-17", "Status": "Confirmed"}
TEXT = "Hi Ana, order A-17 is confirmed."


def make_rule(**overrides: Any) -> CompiledRule:
    fields: dict[str, Any] = {
        "name": "order-confirmed",
        "source": "orders",
        "when": "row['Status'] == 'Confirmed'",
        "to": "{{ row['Phone'] }}",
        "country": "RO",
        "message": MESSAGE,
        "sink": "ro",
    }
    fields.update(overrides)
    return compile_rule(RuleConfig(**fields))


def row(**changes: Any) -> dict[str, Any]:
    return {**ROW, **changes}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in ROW.items() if k != key}


# id, rule overrides, record, expected (to, text, problem, raw_to) or None for "no status"
CASES: list[tuple[str, dict[str, Any], Mapping[str, Any], tuple[Any, ...] | None]] = [
    ("when true", {}, ROW, ("+40740123456", TEXT, None, "0740123456")),
    ("when false", {}, row(Status="Cancelled"), None),
    ("when absent", {"when": None}, without("Status"), ("+40740123456", TEXT, None, "0740123456")),
    ("when truthy text", {"when": "row['VIP']"}, row(VIP="yes"), ("+40740123456", TEXT, None, "0740123456")),
    ("when empty text is false", {"when": "row['VIP']"}, row(VIP=""), None),
    (
        "when on a missing field fails the record",
        {},
        without("Status"),
        (None, None, "when: row has no field 'Status' (fields: Phone, Name, Order ID)", ""),
    ),
    (
        "when that raises",
        {"when": "row['Count'] > 3"},
        row(Count="5"),
        (None, None, "when: TypeError: '>' not supported between instances of 'str' and 'int'", ""),
    ),
    (
        "when missing field, bare",
        {"when": "row['VIP']"},
        ROW,
        (None, None, "when: row has no field 'VIP' (fields: Phone, Name, Order ID, Status)", ""),
    ),
    (
        "missing field in message",
        {},
        {**without("Name"), "name": "Ana"},
        (None, None, "message: row has no field 'Name' (did you mean 'name'?)", "0740123456"),
    ),
    (
        "missing field in to",
        {},
        without("Phone"),
        (None, TEXT, "to: row has no field 'Phone' (fields: Name, Order ID, Status)", ""),
    ),
    (
        "to and message both failing",
        {"when": None},
        {"Order ID": "1"},
        (None, None, "to: row has no field 'Phone' (fields: Order ID)", ""),
    ),
    ("bad number", {}, row(Phone="call me"), (None, TEXT, "'call me' is not a phone number", "call me")),
    ("no number", {}, row(Phone="  "), (None, TEXT, "no recipient number", "")),
    (
        "fixed-line RO number",
        {},
        row(Phone="+40 21 312 3456"),
        (None, TEXT, "'+40 21 312 3456' is a fixed-line number (SMS needs a mobile)", "+40 21 312 3456"),
    ),
    (
        "number with extension",
        {},
        row(Phone="0740123456 ext. 9"),
        (
            None,
            TEXT,
            "'0740123456 ext. 9' has an extension (SMS needs a plain mobile number)",
            "0740123456 ext. 9",
        ),
    ),
    ("RO mobile", {}, row(Phone="0740 123 456"), ("+40740123456", TEXT, None, "0740 123 456")),
    ("PK mobile", {"country": "PK"}, row(Phone="03001234567"), ("+923001234567", TEXT, None, "03001234567")),
    (
        "+prefix ignores country",
        {"country": "PK"},
        row(Phone="+40740123456"),
        ("+40740123456", TEXT, None, "+40740123456"),
    ),
    (
        "no country and no prefix",
        {"country": None},
        ROW,
        (
            None,
            TEXT,
            "'0740123456' has no country prefix (write it as +40..., +92...) and the rule sets no country",
            "0740123456",
        ),
    ),
    (
        "message is empty",
        {"message": "{{ row['Note'] }}"},
        row(Note="  \n "),
        (None, "", "message is empty", "0740123456"),
    ),
    (
        "surrounding whitespace stripped",
        {"message": "\n  Hi {{ row['Name'] }}  \n"},
        ROW,
        ("+40740123456", "Hi Ana", None, "0740123456"),
    ),
    (
        "block tags leave no blank lines",
        {"message": "Hi {{ row['Name'] }}\n{% if row['Status'] %}\nConfirmed.\n{% endif %}\nBye"},
        ROW,
        ("+40740123456", "Hi Ana\nConfirmed.\nBye", None, "0740123456"),
    ),
    (
        "data is not rendered as a template",
        {"message": "Hi {{ row['Name'] }}"},
        row(Name="{{ row['Phone'] }}"),
        ("+40740123456", "Hi {{ row['Phone'] }}", None, "0740123456"),
    ),
    (
        "filters work",
        {"message": "Hi {{ row['Name'] | upper }}, {{ row['Missing'] | default('friend') }}"},
        ROW,
        ("+40740123456", "Hi ANA, friend", None, "0740123456"),
    ),
    (
        "error in message expression",
        {"message": "{{ row['Name'] + 1 }}"},
        ROW,
        (None, None, 'message: TypeError: can only concatenate str (not "int") to str', "0740123456"),
    ),
    (
        "sandbox: class access",
        {"message": "{{ ''.__class__ }}"},
        ROW,
        (None, None, "message: access to attribute '__class__' of 'str' object is unsafe.", "0740123456"),
    ),
    (
        "sandbox: subclasses walk",
        {"message": "{{ row['Name'].__class__.__mro__[1].__subclasses__() }}"},
        ROW,
        (None, None, "message: access to attribute '__class__' of 'str' object is unsafe.", "0740123456"),
    ),
    (
        "sandbox: the record cannot be changed",
        {"when": "row.clear() or true"},
        ROW,
        (None, None, "when: access to attribute 'clear' of 'dict' object is unsafe.", ""),
    ),
    (
        "sandbox: format string escape",
        {"to": "{{ '{0.__class__}'.format(row) }}"},
        ROW,
        (None, TEXT, "to: access to attribute '__class__' of 'dict' object is unsafe.", ""),
    ),
]

CUSTOMER = {"name": "Ana", "phone": "+923001234567"}
JSON_CASES: list[tuple[str, dict[str, Any], Mapping[str, Any], tuple[Any, ...] | None]] = [
    (
        "nested by attribute",
        {"when": "row.paid", "to": "{{ row.customer.phone }}", "message": "Hi {{ row.customer.name }}"},
        {"paid": True, "customer": CUSTOMER},
        ("+923001234567", "Hi Ana", None, "+923001234567"),
    ),
    (
        "nested by key",
        {"when": "row['paid']", "to": "{{ row['customer']['phone'] }}", "message": "Hi"},
        {"paid": True, "customer": CUSTOMER},
        ("+923001234567", "Hi", None, "+923001234567"),
    ),
    (
        "nested false",
        {"when": "row.paid", "to": "{{ row.customer.phone }}", "message": "Hi"},
        {"paid": False, "customer": CUSTOMER},
        None,
    ),
    (
        "nested missing field names the path",
        {"when": None, "to": "{{ row.customer.phone }}", "message": "Hi"},
        {"customer": {"name": "Ana"}},
        (None, "Hi", "to: row['customer'] has no field 'phone' (fields: name)", ""),
    ),
    (
        "list element",
        {"when": None, "to": "{{ row['items'][0]['to'] }}", "message": "{{ row['items'] | length }} items"},
        {"items": [{"to": "+40740123456"}, {"to": "x"}]},
        ("+40740123456", "2 items", None, "+40740123456"),
    ),
    (
        "list index out of range",
        {"when": None, "to": "{{ row['items'][5]['to'] }}", "message": "Hi"},
        {"items": [{"to": "+40740123456"}]},
        (None, "Hi", "to: row['items'] has no element 5 (it has 1)", ""),
    ),
    (
        "JSON null is empty, not 'None'",
        {"when": None, "to": "{{ row.phone }}", "message": "Hi {{ row.name }}"},
        {"phone": "+40740123456", "name": None},
        ("+40740123456", "Hi", None, "+40740123456"),
    ),
    (
        "JSON null recipient",
        {"when": None, "to": "{{ row.phone }}", "message": "Hi"},
        {"phone": None},
        (None, "Hi", "no recipient number", ""),
    ),
    (
        "JSON numbers render as text",
        {
            "when": "row.total > 100",
            "to": "{{ row.phone }}",
            "message": "Order {{ row.id }}: {{ row.total }}",
        },
        {"phone": "+40740123456", "id": 42, "total": 150.5},
        ("+40740123456", "Order 42: 150.5", None, "+40740123456"),
    ),
]


@pytest.mark.parametrize(
    ("overrides", "record", "expected"),
    [c[1:] for c in CASES + JSON_CASES],
    ids=[c[0] for c in CASES + JSON_CASES],
)
def test_evaluate(
    overrides: dict[str, Any], record: Mapping[str, Any], expected: tuple[Any, ...] | None
) -> None:
    rule = make_rule(**overrides)
    decision = rule.evaluate(record)
    if expected is None:
        assert decision is None
        return
    assert decision is not None
    assert decision.rule is rule
    assert (decision.to, decision.text, decision.problem, decision.raw_to) == expected
    assert decision.ok is (expected[2] is None)


SYNTAX = [
    # id, overrides, field, message: the very text `connector check` prints after `rules.N.field: `
    (
        "unclosed subscript",
        {"message": "Hi {{ row['Name' }}"},
        "message",
        "template syntax error: unexpected '}', expected ']'",
    ),
    (
        "unclosed tag",
        {"to": "{{ row.Phone"},
        "to",
        "template syntax error: unexpected end of template, expected 'end of print statement'.",
    ),
    (
        "dangling operator",
        {"when": "row['Status'] =="},
        "when",
        "template syntax error: unexpected 'end of template'",
    ),
    (
        "trailing text",
        {"when": "row['a'] row['b']"},
        "when",
        "template syntax error: unexpected text after the expression",
    ),
    (
        "braces in when",
        {"when": "{{ row['Status'] == 'x' }}"},
        "when",
        "an expression is written without {{ }}: e.g. row['Status'] == 'Confirmed'",
    ),
    ("empty when", {"when": ""}, "when", "empty expression (leave `when` out to take every record)"),
    (
        "unknown filter",
        {"to": "{{ row.Phone | nosuchfilter }}"},
        "to",
        "template syntax error: no filter named 'nosuchfilter'.",
    ),
    (
        "bare field name",
        {"message": "Hi {{ Name }}"},
        "message",
        "unknown name 'Name' (the record is row, e.g. row['Name'])",
    ),
    (
        "bare name in when",
        {"when": "Status == 'x'"},
        "when",
        "unknown name 'Status' (the record is row, e.g. row['Status'])",
    ),
    (
        "multi-line template names the line",
        {"message": "Hi,\n{{ row['Name' }}\nBye"},
        "message",
        "template syntax error: unexpected '}', expected ']' (line 2 of the template)",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "field", "message"), [c[1:] for c in SYNTAX], ids=[c[0] for c in SYNTAX]
)
def test_syntax_errors_name_the_field(overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(RuleSyntaxError) as caught:
        make_rule(**overrides)
    assert (caught.value.field, caught.value.message, caught.value.rule) == (
        field,
        message,
        "order-confirmed",
    )
    assert str(caught.value) == f"{field}: {message}"


def test_set_and_loop_variables_are_not_unknown_names() -> None:
    rule = make_rule(
        when=None, message="{% set who = row['Name'] %}{% for i in [1, 2] %}{{ who }}{{ i }}{% endfor %}"
    )
    decision = rule.evaluate(ROW)
    assert decision is not None
    assert decision.text == "Ana1Ana2"


def test_compile_rules_keeps_order_and_names_the_failing_rule() -> None:
    configs = [
        RuleConfig(name="a", source=["orders", "erp"], to="{{ row.Phone }}", message="A", sink="ro"),
        RuleConfig(name="b", source="shop", to="{{ row.Phone }}", message="B", sink="pk", country="PK"),
    ]
    compiled = compile_rules(configs)
    assert [(r.name, r.sink, r.sources, r.config) for r in compiled] == [
        ("a", "ro", frozenset({"orders", "erp"}), configs[0]),
        ("b", "pk", frozenset({"shop"}), configs[1]),
    ]
    broken = [*configs, RuleConfig(name="c", source="shop", to="{{ row.Phone", message="C", sink="pk")]
    with pytest.raises(RuleSyntaxError) as caught:
        compile_rules(broken)
    assert (caught.value.rule, caught.value.field) == ("c", "to")


def test_templates_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[object] = []
    real_compile = rules._ENV.compile

    def counting_compile(*args: Any, **kwargs: Any) -> Any:
        compiled.append(args[0])
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(rules._ENV, "compile", counting_compile)
    rule = make_rule()
    assert len(compiled) == 4  # when, to, message, and all three as one: the counter sees compilation
    records = [ROW, row(Status="No"), without("Name"), row(Phone="x"), {"Status": "Confirmed"}]
    decisions = [rule.evaluate(records[i % len(records)]) for i in range(1000)]
    assert len(compiled) == 4
    assert sum(1 for d in decisions if d is not None and d.ok) == 200


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("the source broke")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot list")

    def __len__(self) -> int:
        return 1


class BadText:
    def __str__(self) -> str:
        raise ValueError("cannot be shown")


def _loop() -> dict[str, Any]:
    looped: dict[str, Any] = {"a": {}}
    looped["a"]["back"] = looped
    return looped


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (None, "when: 'None' has no attribute 'Status'"),
        ([1, 2], "when: 'list object' has no attribute 'Status'"),
        ("text", "when: 'str object' has no attribute 'Status'"),
        (ExplodingMapping(), "when: RuntimeError: the source broke"),
        ({"Status": "Confirmed", "Phone": BadText()}, "to: ValueError: cannot be shown"),
        ({1: "x", "Status": "Confirmed"}, "to: row has no field 'Phone' (fields: 1, Status)"),
    ],
)
def test_evaluate_never_raises(record: Any, problem: str) -> None:
    decision = make_rule().evaluate(record)
    assert decision is not None
    assert decision.problem == problem
    assert decision.to is None


def test_missing_field_in_a_record_that_refers_to_itself() -> None:
    rule = make_rule(when=None, message="{{ row.a.missing }}")
    decision = rule.evaluate({**_loop(), "Phone": "0740123456"})
    assert decision is not None
    assert decision.problem == "message: row['a'] has no field 'missing' (fields: back)"


def test_a_long_reason_is_capped() -> None:
    rule = make_rule(when=None, message="{{ row[row['Key']] }}")
    decision = rule.evaluate(row(Key="K" * 1000))
    assert decision is not None
    assert decision.problem is not None
    assert decision.problem.startswith("message: row has no field 'KKK")
    assert len(decision.problem) == 300
    assert decision.problem.endswith("...")


def test_decision_is_immutable() -> None:
    decision = make_rule().evaluate(ROW)
    assert isinstance(decision, Decision)
    with pytest.raises(AttributeError):
        decision.text = "changed"  # type: ignore[misc]


def test_single_render_fast_path_decides_exactly_like_the_field_by_field_path() -> None:
    import dataclasses

    fast = make_rule()
    assert fast._combined is not None
    reference = dataclasses.replace(fast, _combined=None)
    records = [
        ROW, row(Status="No"), without("Name"), without("Status"), row(Phone="x"), row(Phone=""),
        row(Phone="0212345678"), row(Name="  padded  "), row(Name="sep\x1einside"), row(Phone="07\x1e40"),
        {"Status": "Confirmed"}, row(Name=None), row(Status=None),
    ]
    def summary(d: Decision | None) -> tuple[Any, ...] | None:
        return None if d is None else (d.to, d.text, d.problem, d.raw_to)

    for record in records:
        assert summary(fast.evaluate(record)) == summary(reference.evaluate(record)), record


def test_rules_with_statements_use_the_field_by_field_path_only() -> None:
    rule = make_rule(message="{% if row['Name'] %}Hi {{ row['Name'] }}{% endif %}")
    assert rule._combined is None
    decision = rule.evaluate(ROW)
    assert decision is not None and decision.ok
