"""The send policies' keys in config.yaml (SPEC "config.yaml", "Send policies"): the SPEC's example
loads, and every bad value is a problem located by file, line and key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from connector.config_loader import load_config
from connector.errors import ConfigError

# The policy parts of SPEC.md's example, as published.
SPEC_POLICIES = """\
state: sqlite:///connector.db
timezone: UTC
shutdown_grace: 10s
instance: {lease: 30s}
suppress:
  - path: optouts.csv
    column: Phone

sinks:
  ro:
    type: robo_sms_ro
    token: secret
    daily_budget: 500

sources:
  orders:
    type: csv_folder
    path: ./inbox

rules:
  - name: order-confirmed
    source: orders
    when: "row['Status'] == 'Confirmed'"
    to: "{{ row['Phone'] }}"
    country: RO
    message: "Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed."
    sink: ro
    dedupe_window: 7d
    send_window: {days: mon-fri, from: "08:00", to: "20:00"}
    send_at: "{{ row['Appointment'] }}"
    send_offset: -1d
    expire_after: 12h
    max_per_recipient: 3/24h
"""


def load_text(folder: Path, text: str) -> list[str]:
    (folder / "config.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    try:
        load_config(Path(folder / "config.yaml"), {})
    except ConfigError as exc:
        return [str(p).replace(str(folder) + "/", "") for p in exc.problems]
    return []


def test_the_spec_example_of_the_policies_loads(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(SPEC_POLICIES, encoding="utf-8")
    loaded = load_config(tmp_path / "config.yaml", {})
    rule = loaded.config.rules[0]
    assert rule.send_offset == -86400.0 and rule.expire_after == 43200.0
    assert rule.max_per_recipient is not None and rule.max_per_recipient.written == "3 per 24h"
    assert rule.send_window is not None and rule.send_window.days == frozenset(range(5))
    assert loaded.config.sinks["ro"].daily_budget == 500
    assert str(loaded.config.timezone) == "UTC"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("days: mon-fri", "days: mon-fry", "config.yaml:29 rules.0.send_window.days: 'fry' is not a day"),
        (
            "3/24h",
            "3 a day",
            "config.yaml:33 rules.0.max_per_recipient: '3 a day' is not a cap: write N/PERIOD",
        ),
        (
            "timezone: UTC",
            "timezone: Mars/Olympus",
            "config.yaml:2 timezone: 'Mars/Olympus' is not a time zone",
        ),
        (
            "send_at: \"{{ row['Appointment'] }}\"",
            "send_at: null",
            "send_offset moves send_at: give send_at too",
        ),
        (
            "daily_budget: 500",
            "daily_budget: 0",
            "config.yaml:13 sinks.ro.daily_budget: input should be greater",
        ),
        ('from: "08:00", to: "20:00"', 'from: "20:00", to: "20:00"', "are the same time"),
        (
            "expire_after: 12h",
            "expire_after: soon",
            "config.yaml:32 rules.0.expire_after: 'soon' is not a duration",
        ),
        ("column: Phone", "column: Phone\n    country: XX", "suppress.0.country: 'XX' is not a country code"),
    ],
)
def test_a_bad_policy_value_is_located(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in SPEC_POLICIES
    found = load_text(tmp_path, SPEC_POLICIES.replace(old, new))
    assert any(expected in problem for problem in found), found


def test_a_send_at_template_that_does_not_compile_is_located(tmp_path: Path) -> None:
    found = load_text(tmp_path, SPEC_POLICIES.replace("{{ row['Appointment'] }}", "{{ Appointment }}"))
    assert any("rules.0.send_at: unknown name 'Appointment'" in problem for problem in found), found
