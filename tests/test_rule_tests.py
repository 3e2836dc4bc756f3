"""`connector test` (SPEC "Rule tests"): rows in, expected messages out, through the code a real pass
runs (rules, the sink's number, the send policies at the case's `at`), sending nothing."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from connector.config_loader import load_config
from connector.rule_tests import run_tests
from tests.helpers import ROOT, connector, env, read_results

CONFIG = """\
sinks:
  outbox: {type: dry_run}
sources:
  inbox: {type: csv_folder, path: ./inbox}
rules:
  - name: confirm
    source: inbox
    when: "row['Status'] == 'Confirmed'"
    to: "{{ row['Phone'] }}"
    country: RO
    message: "Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed."
    sink: outbox
"""

ANA = "{Order ID: A-1, Name: Ana, Phone: 0740 123 456, Status: Confirmed}"
PASSING = f"""\
cases:
  - name: a confirmed order gets one SMS
    row: {ANA}
    expect:
      - rule: confirm
        to: "+40740123456"
        message: "Hi Ana, order A-1 is confirmed."
        segments: 1
  - name: a cancelled order gets none
    row: {{Order ID: A-2, Name: Ion, Phone: 0740 123 456, Status: Cancelled}}
    expect: []
"""

# Two sources, the send policies, an opt-out list: `at` decides what the policies say.
POLICIES = """\
timezone: Europe/Bucharest
suppress:
  - {path: optouts.csv, column: Phone, country: RO}
sinks:
  outbox: {type: dry_run}
sources:
  offers: {type: csv_folder, path: ./offers}
  visits: {type: csv_folder, path: ./visits}
rules:
  - name: offer
    source: offers
    to: "{{ row['Phone'] }}"
    country: RO
    message: "20% off this week, {{ row['Name'] }}."
    sink: outbox
    send_window: {days: mon-fri, from: "08:00", to: "20:00"}
  - name: reminder
    source: visits
    to: "{{ row['Phone'] }}"
    country: RO
    message: "See you on {{ row['Date'] }}."
    sink: outbox
    send_at: "{{ row['Date'] }}"
    send_offset: -1d
    expire_after: 2h
"""


def folder_with(tmp_path: Path, config: str = CONFIG, **files: str) -> Path:
    (tmp_path / "config.yaml").write_text(config)
    for name, text in files.items():
        (tmp_path / name.replace("_", ".")).write_text(textwrap.dedent(text))
    return tmp_path


Run = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """`connector test` in a folder with this config and these files (`a_test_yaml` is a.test.yaml):
    (exit code, what it printed)."""

    async def run(config: str = CONFIG, *named: str, **files: str) -> tuple[int, str]:
        folder = folder_with(tmp_path, textwrap.dedent(config), **files)
        monkeypatch.chdir(folder)
        loaded = load_config(folder / "config.yaml", {}, unset_as_written=True)
        capsys.readouterr()
        code = await run_tests(loaded, named)
        return code, capsys.readouterr().out

    return run


# ---- passing and failing -------------------------------------------------------------------------


async def test_a_passing_file_says_pass_per_case_and_exits_0(run: Run) -> None:
    code, out = await run(orders_test_yaml=PASSING)
    assert code == 0, out
    assert "PASS a confirmed order gets one SMS" in out
    assert "PASS a cancelled order gets none" in out
    assert out.rstrip().endswith("2 passed, 0 failed (1 file)")


async def test_a_failing_case_names_the_case_the_field_what_was_expected_and_what_came(run: Run) -> None:
    wrong = f"""\
    cases:
      - name: the wrong number and text
        row: {ANA}
        expect:
          - to: "+40740123457"
            message: "Hi Ana, order A-1 is confirmed!"
            segments: 2
      - name: a long text differs
        row: {{Order ID: A-1, Name: Ana Maria Popescu-Ionescu de la Bucuresti, Phone: 0740 123 456,
              Status: Confirmed}}
        expect:
          - message: "Hi Ana Maria Popescu-Ionescu de la Bucuresti, order A-1 was confirmed."
      - name: expected nothing
        row: {ANA}
        expect: []
    """
    code, out = await run(orders_test_yaml=PASSING, wrong_test_yaml=wrong)
    assert code == 1
    assert "FAIL the wrong number and text  (wrong.test.yaml:2)" in out
    assert "rule confirm, to: expected '+40740123457', actual '+40740123456'" in out
    assert (
        "rule confirm, message: expected 'Hi Ana, order A-1 is confirmed!', "
        "actual 'Hi Ana, order A-1 is confirmed.'"
    ) in out
    assert "rule confirm, segments: expected 2, actual 1" in out
    # A long text: a unified diff.
    assert "FAIL a long text differs" in out
    assert "rule confirm, message: expected and actual differ:" in out
    assert "-Hi Ana Maria Popescu-Ionescu de la Bucuresti, order A-1 was confirmed." in out
    assert "+Hi Ana Maria Popescu-Ionescu de la Bucuresti, order A-1 is confirmed." in out
    assert "FAIL expected nothing" in out
    assert "messages: expected no SMS, actual 1 message(s)" in out
    assert "actual:   rule confirm: sent, to +40740123456, 'Hi Ana, order A-1 is confirmed.'" in out
    assert "PASS a confirmed order gets one SMS" in out  # the other file ran too
    assert out.rstrip().endswith("2 passed, 3 failed (2 files)")


async def test_a_landline_and_an_invalid_number_fail_with_their_reason(run: Run) -> None:
    cases = """\
    cases:
      - name: a landline fails
        row: {Order ID: A-4, Name: Radu, Phone: 021 315 1234, Status: Confirmed}
        expect:
          - failed: FIXED-LINE
      - name: a short number fails
        row: {Order ID: A-5, Name: Ioana, Phone: "07401", Status: Confirmed}
        expect:
          - failed: not a valid
      - name: a landline expected to go
        row: {Order ID: A-4, Name: Radu, Phone: 021 315 1234, Status: Confirmed}
        expect:
          - to: "+40213151234"
    """
    code, out = await run(numbers_test_yaml=cases)
    assert code == 1
    assert "PASS a landline fails" in out
    assert "PASS a short number fails" in out
    assert (
        "rule confirm, outcome: expected sent, actual failed: "
        "'021 315 1234' is a fixed-line number (SMS needs a mobile)"
    ) in out
    assert "rule confirm, to: expected '+40213151234', actual none (no usable number)" in out


async def test_values_are_taken_as_a_cell_would_hold_them(run: Run) -> None:
    """Unquoted 0740123456 is octal to YAML, 12.50 a float, 2026-12-08 a date: a CSV cell holds
    the text as written, and so does the test's row."""
    config = CONFIG.replace(
        "is confirmed.", "is confirmed: {{ row['Total'] }} lei, {{ row['Day'] }}.{{ row['Note'] }}"
    )
    cases = """\
    cases:
      - name: cells as written
        row: {Order ID: 17, Name: Ana, Phone: 0740123456, Status: Confirmed,
              Total: 12.50, Day: 2026-12-08, Note: null}
        expect:
          - to: +40740123456
            message: "Hi Ana, order 17 is confirmed: 12.50 lei, 2026-12-08."
    """
    code, out = await run(config, cells_test_yaml=cases)
    assert code == 0, out


async def test_a_webhook_row_keeps_its_json_values_and_needs_no_secret(run: Run) -> None:
    config = """\
    sinks:
      pk: {type: robo_sms_pk, email: ops@example.com, key: "${PK_KEY_NOT_SET}", mask: SHOP}
    sources:
      shop: {type: webhook, path: /hooks/shop, secret: "${SHOP_SECRET_NOT_SET}"}
    rules:
      - name: paid
        source: shop
        when: "row['paid'] is sameas true"
        to: "{{ row['customer']['phone'] }}"
        country: PK
        message: "{{ row['items'] | length }} item(s), {{ row['total'] + 1 }} with delivery."
        sink: pk
    """
    cases = """\
    cases:
      - name: JSON stays JSON
        row: {paid: true, total: 12.5, items: [{sku: A}, {sku: B}], customer: {phone: "0300 1234567"}}
        expect:
          - to: "923001234567"
            message: "2 item(s), 13.5 with delivery."
      - name: the plus form matches too
        row: {paid: true, total: 1, items: [], customer: {phone: "0300 1234567"}}
        expect: [{to: "+923001234567"}]
      - name: not paid
        row: {paid: "true", total: 1, items: [], customer: {phone: "0300 1234567"}}
        expect: []
    """
    code, out = await run(config, shop_test_yaml=cases)
    assert code == 0, out
    assert "3 passed, 0 failed" in out


# ---- the send policies, as if now were `at` ------------------------------------------------------


async def test_at_makes_a_window_wait_and_a_scheduled_send_wait_or_expire(run: Run) -> None:
    cases = """\
    cases:
      - name: an offer on a Saturday waits for Monday 08:00 in Bucharest
        source: offers
        row: {Name: Ana, Phone: 0740 123 456}
        at: 2026-12-05T12:00
        expect:
          - pending: quiet hours until 2026-12-07T06:00:00Z
      - name: an offer on a Monday goes
        source: offers
        row: {Name: Ana, Phone: 0740 123 456}
        at: 2026-12-07T12:00:00+02:00
        expect:
          - message: "20% off this week, Ana."
      - name: a reminder waits for the day before
        source: visits
        row: {Phone: 0740 123 456, Date: "2026-12-08 10:00"}
        at: 2026-12-06T12:00
        expect:
          - pending: scheduled for 2026-12-07T08:00:00Z
            message: "See you on 2026-12-08 10:00."
      - name: a reminder two hours late is expired
        source: visits
        row: {Phone: 0740 123 456, Date: "2026-12-08 10:00"}
        at: 2026-12-07T13:00
        expect:
          - skipped: expired (was due 2026-12-07T08:00:00Z)
      - name: an offer on a Saturday expected to go
        source: offers
        row: {Name: Ana, Phone: 0740 123 456}
        at: 2026-12-05T12:00
        expect: [{to: "+40740123456"}]
    """
    code, out = await run(POLICIES, policies_test_yaml=cases)
    assert code == 1
    assert out.count("PASS ") == 4, out
    assert (
        "rule offer, outcome: expected sent, actual pending: quiet hours until 2026-12-07T06:00:00Z"
    ) in out


async def test_a_number_on_a_suppress_list_is_skipped_opted_out(run: Run) -> None:
    cases = """\
    cases:
      - name: opted out
        source: offers
        row: {Name: Ion, Phone: 0740 000 111}
        at: 2026-12-07T12:00
        expect:
          - skipped: Opted Out
      - name: another number goes
        source: offers
        row: {Name: Ana, Phone: 0740 123 456}
        at: 2026-12-07T12:00
        expect:
          - to: "+40740123456"
    """
    code, out = await run(POLICIES, optouts_csv="Name,Phone\nIon,0740 000 111\n", o_test_yaml=cases)
    assert code == 0, out


async def test_several_rules_on_a_row_are_told_apart_by_name(run: Run) -> None:
    config = CONFIG + textwrap.indent(
        textwrap.dedent("""\
        - name: thanks
          source: inbox
          to: "{{ row['Phone'] }}"
          country: RO
          message: "Thank you, {{ row['Name'] }}."
          sink: outbox
        """),
        "  ",
    )
    cases = f"""\
    cases:
      - name: named
        row: {ANA}
        expect:
          - {{rule: thanks, message: "Thank you, Ana."}}
          - {{rule: confirm, to: "+40740123456"}}
      - name: unnamed
        row: {ANA}
        expect: [{{to: "+40740123456"}}, {{to: "+40740123456"}}]
    """
    code, out = await run(config, two_test_yaml=cases)
    assert code == 1
    assert "PASS named" in out
    assert "rule: several rules want this row (confirm, thanks): name the rule of each" in out


# ---- bad files -----------------------------------------------------------------------------------


async def test_a_bad_file_is_every_problem_located_and_exit_1(run: Run) -> None:
    bad = """\
    cases:
      - name: a typo
        rows: {Phone: "0740 123 456"}
        row: {Phone: "0740 123 456"}
        expect:
          - rule: confirm
            segments: two
            sent: yes
      - name: wrong types
        row: [1, 2]
        at: tomorrow
        expect: {to: "+40740123456"}
      - name: unknown names
        source: inboxx
        row: {}
        expect: []
      - name: an unknown rule
        row: {}
        expect: [{rule: confirmed}]
    """
    code, out = await run(orders_test_yaml=PASSING, bad_test_yaml=bad)
    assert code == 1
    for problem in (
        "bad.test.yaml:3 cases.0.rows: unknown key (did you mean 'row'?)",
        "bad.test.yaml:7 cases.0.expect.0.segments: input should be a valid integer",
        "bad.test.yaml:8 cases.0.expect.0.sent: unknown key",
        "bad.test.yaml:10 cases.1.row: expected a mapping",
        "bad.test.yaml:11 cases.1.at: 'tomorrow' is not an ISO date-time",
        "bad.test.yaml:12 cases.1.expect: input should be a valid list",
        "bad.test.yaml:14 cases.2.source: no source named 'inboxx' (did you mean 'inbox'?",
        "bad.test.yaml:19 cases.3.expect.0.rule: no rule named 'confirmed' for source 'inbox' (did you mean",
    ):
        assert problem in out, out
    assert "== bad.test.yaml: 8 problem(s), not run" in out
    assert "PASS a confirmed order gets one SMS" in out
    assert out.rstrip().endswith("2 passed, 0 failed (2 files; 1 with problems, not run)")


async def test_with_several_sources_a_case_names_its_source(run: Run) -> None:
    cases = """\
    cases:
      - name: which source?
        row: {Name: Ana, Phone: 0740 123 456}
        expect: []
    """
    code, out = await run(POLICIES, s_test_yaml=cases)
    assert code == 1
    assert (
        "s.test.yaml:2 cases.0.source: field required: name the source of the row (it has 2: offers, visits)"
        in out
    )


async def test_no_test_files_is_said_and_exit_0(run: Run) -> None:
    code, out = await run()
    assert code == 0
    assert "no *.test.yaml beside config.yaml" in out


async def test_a_named_file_that_does_not_exist_is_a_problem(run: Run) -> None:
    code, out = await run(CONFIG, "missing.test.yaml")
    assert code == 1
    assert "missing.test.yaml: test file does not exist" in out


# ---- as a user runs it ---------------------------------------------------------------------------


def test_the_shipped_example_passes_against_the_default_config() -> None:
    done = connector("test", "-c", "config.yaml", cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 passed, 0 failed (1 file)" in done.stdout
    assert "FAIL" not in done.stdout


def test_the_reminders_example_passes_without_any_credential() -> None:
    environ = {k: v for k, v in env().items() if k not in ("ROBO_SMS_TOKEN", "ROBOSMS_PK_KEY")}
    environ.pop("SHOP_WEBHOOK_SECRET", None)
    done = connector("test", "-c", "examples/reminders.yaml", cwd=ROOT, timeout=60, environ=environ)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 passed, 0 failed (1 file)" in done.stdout
    # The config itself still needs them to run.
    check = connector("check", "--offline", "-c", "examples/reminders.yaml", cwd=ROOT, environ=environ)
    assert check.returncode == 1


def test_check_counts_the_tests_and_warns_of_a_broken_file_but_exits_on_the_config(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, orders_test_yaml=PASSING)
    done = connector("check", "--offline", "-c", "config.yaml", cwd=folder, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "  tests    1 file(s), 2 case(s): run connector test" in done.stdout
    (folder / "bad.test.yaml").write_text("cases:\n  - name: x\n    rows: {}\n    expect: []\n")
    done = connector("check", "--offline", "-c", "config.yaml", cwd=folder, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "  tests    2 file(s), 2 case(s): run connector test (2 problem(s) in the test files, below)" in (
        done.stdout
    )
    assert "warning: bad.test.yaml:3 cases.0.rows: unknown key (did you mean 'row'?)" in done.stdout


# ---- the same as a real pass ---------------------------------------------------------------------

ROWS = [
    ["Order ID", "Name", "Phone", "Status", "VIP"],
    ["B-1", "Ana Popescu", "0740 123 456", "Confirmed", "yes"],
    ["B-2", "Mihai Ionescu", "+40 741 234 567", "Confirmed", ""],
    ["B-3", "Elena Dumitru", "0741 999 888", "Cancelled", "yes"],
    ["B-4", "Radu Stan", "021 315 1234", "Confirmed", ""],
    ["B-5", "Ioana Marin", "07401", "Confirmed", ""],
    ["B-6", "Ștefan Țăranu", "0742 555 666", "Confirmed", "yes"],  # UCS-2: fewer characters a segment
    ["B-7", "Maria " + "Long" * 40, "0743 111 222", "Confirmed", ""],  # two segments
    ["B-8", "", "0744 333 444", "Confirmed", ""],  # the name's filter fails: a template error
]
TWO_RULES = (
    CONFIG.replace(
        "  outbox: {type: dry_run}\n",
        "  a: {type: dry_run, path: outbox-a.jsonl}\n  b: {type: dry_run, path: outbox-b.jsonl}\n",
    )
    .replace("path: ./inbox}", "path: ./inbox, settle: 100ms}")
    .replace("sink: outbox", "sink: a")
    # An empty name has no first letter: a template error, the row's `failed:` reason.
    .replace("Hi {{ row['Name'] }}", "Hi {{ row['Name'] | first }}{{ row['Name'][1:] }}")
    + """\
  - name: vip
    source: inbox
    when: "row['VIP'] == 'yes' and row['Status'] == 'Confirmed'"
    to: "{{ row['Phone'] }}"
    country: RO
    message: "{{ row['Name'] }}: thank you for being with us."
    sink: b
"""
)


def test_connector_test_accepts_exactly_what_once_sent_through_a_dry_run_sink(tmp_path: Path) -> None:
    """The rows through a real `connector once` into dry_run outboxes; cases made from what it
    sent and the statuses it wrote; `connector test` passes every one of them."""
    (tmp_path / "config.yaml").write_text(TWO_RULES)
    (tmp_path / "inbox").mkdir()
    inbox = tmp_path / "inbox" / "orders.csv"
    inbox.write_text("".join(",".join(row) + "\n" for row in ROWS), encoding="utf-8")
    os.utime(inbox, (0, 0))
    done = connector("once", "-c", "config.yaml", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    sent = {
        rule: [json.loads(line) for line in (tmp_path / f"outbox-{sink}.jsonl").read_text().splitlines()]
        for rule, sink in (("confirm", "a"), ("vip", "b"))
    }
    assert len(sent["confirm"]) == 4 and len(sent["vip"]) == 2
    statuses = {
        r["Order ID"]: r["SMS Status"] for r in read_results(tmp_path / "inbox/processed/orders.results.csv")
    }
    cases = []
    for values in ROWS[1:]:
        row = dict(zip(ROWS[0], values, strict=True))
        mine = {
            "confirm": lambda text, row=row: f"order {row['Order ID']} " in text,
            "vip": lambda text, row=row: text.startswith(f"{row['Name']}:"),
        }
        expect = [
            {"rule": rule, "to": message["to"], "message": message["text"]}
            for rule, messages in sent.items()
            for message in messages
            if mine[rule](message["text"])
        ]
        status = statuses[row["Order ID"]]
        if not expect and status.startswith("failed: "):
            expect = [{"failed": status.removeprefix("failed: ")}]
        cases.append(
            {"name": f"row {row['Order ID']}: {status or 'no status'}", "row": row, "expect": expect}
        )
    assert sum(len(case["expect"]) for case in cases) == 9  # 6 sent, 3 failed; B-3 wanted by no rule
    (tmp_path / "sent.test.yaml").write_text(yaml.safe_dump({"cases": cases}, allow_unicode=True))
    shutil.rmtree(tmp_path / "inbox")
    done = connector("test", "-c", "config.yaml", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 passed, 0 failed (1 file)" in done.stdout
    assert not (tmp_path / "inbox").exists()  # `test` opens no source
