"""The send policies as units, on an injected clock: quiet hours (days, spans over midnight, DST),
scheduled sends (the date forms, offsets, expiry), and how verdicts combine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from connector.optouts import CACHE_SCOPE, OptOuts, SuppressConfig, read_list
from connector.policy import Act, Candidate, PolicyContext, Scheduling, decide
from policies.optout import OptOutPolicy
from policies.schedule import SEND_AT, SchedulePolicy, parse_moment
from policies.window import SendWindow, WindowPolicy, parse_days
from tests.ledgers import joined

BUCHAREST = ZoneInfo("Europe/Bucharest")
UTC = ZoneInfo("UTC")


def at(text: str, zone: ZoneInfo = BUCHAREST) -> float:
    """An instant written as local time in `zone`."""
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local(epoch: float, zone: ZoneInfo = BUCHAREST) -> str:
    return datetime.fromtimestamp(epoch, zone).strftime("%a %Y-%m-%d %H:%M")


CANDIDATE = Candidate(rule="r", sink="ro", to="+40740123456", text="hi")


def window(**fields: object) -> SendWindow:
    return SendWindow.model_validate({"days": "mon-fri", "from": "08:00", "to": "20:00", **fields})


# -- days and times as written ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "days"),
    [
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("sat,sun", {5, 6}),
        ("daily", set(range(7))),
        ("fri-mon", {4, 5, 6, 0}),
        ("mon-wed, Friday", {0, 1, 2, 4}),
        (["tue", "thu"], {1, 3}),
    ],
)
def test_days_are_read_as_people_write_them(written: object, days: set[int]) -> None:
    assert parse_days(written) == days


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"days": "mon-fry"}, "'fry' is not a day"),
        ({"from": "25:00"}, "is not a time of day"),
        ({"from": "08:00", "to": "08:00"}, "are the same time"),
        ({"timezone": "Europe/Bucharestt"}, "is not a time zone zoneinfo knows"),
        ({"when": "always"}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_window_says_what_is_wrong(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        window(**fields)


# -- quiet hours ----------------------------------------------------------------------------------


def test_inside_the_window_sends_and_outside_it_waits_for_the_next_opening() -> None:
    policy = WindowPolicy(window(), BUCHAREST)
    assert policy.check(CANDIDATE, at("2026-12-07 10:00")).act is Act.SEND  # Monday
    evening = policy.check(CANDIDATE, at("2026-12-07 20:00"))  # `to` is not inside
    assert evening.act is Act.WAIT and local(evening.until or 0) == "Tue 2026-12-08 08:00"
    assert evening.reason == "quiet hours until 2026-12-08T06:00:00Z"
    friday_night = policy.check(CANDIDATE, at("2026-12-11 21:30"))
    assert local(friday_night.until or 0) == "Mon 2026-12-14 08:00"


def test_a_window_that_ends_before_it_starts_spans_midnight() -> None:
    night = WindowPolicy(window(days="fri", **{"from": "22:00", "to": "06:00"}), BUCHAREST)
    assert night.check(CANDIDATE, at("2026-12-11 23:00")).act is Act.SEND  # Friday night
    assert night.check(CANDIDATE, at("2026-12-12 05:59")).act is Act.SEND  # Saturday, still Friday's
    later = night.check(CANDIDATE, at("2026-12-12 06:00"))
    assert local(later.until or 0) == "Fri 2026-12-18 22:00"


def test_the_window_keeps_local_hours_across_a_dst_change() -> None:
    # Romania moves from UTC+2 to UTC+3 at 03:00 on Sunday 29 March 2026.
    policy = WindowPolicy(window(days="daily"), BUCHAREST)
    saturday = policy.check(CANDIDATE, at("2026-03-28 21:00"))
    assert local(saturday.until or 0) == "Sun 2026-03-29 08:00"
    assert saturday.reason == "quiet hours until 2026-03-29T05:00:00Z"  # UTC+3 already
    friday = policy.check(CANDIDATE, at("2026-03-27 21:00"))
    assert friday.reason == "quiet hours until 2026-03-28T06:00:00Z"  # still UTC+2
    autumn = policy.check(CANDIDATE, at("2026-10-24 21:00"))  # back to UTC+2 on 25 October
    assert autumn.reason == "quiet hours until 2026-10-25T06:00:00Z"


def test_the_windows_own_zone_wins_over_the_top_level_one() -> None:
    karachi = WindowPolicy(window(timezone="Asia/Karachi"), BUCHAREST)
    verdict = karachi.check(CANDIDATE, at("2026-12-07 06:30"))  # 09:30 in Karachi: inside
    assert verdict.act is Act.SEND


# -- scheduled sends --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "2026-12-08T10:00",
        "2026-12-08 10:00",
        "08.12.2026 10:00",
        "2026-12-08T08:00:00Z",
        "2026-12-08T10:00+02:00",
    ],
)
def test_the_date_forms_of_the_spec_name_the_same_instant(written: str) -> None:
    assert parse_moment(written, BUCHAREST) == at("2026-12-08 10:00")


@dataclass(frozen=True)
class Rule:
    send_at: str | None = "{{ row['When'] }}"
    send_offset: float = 0.0
    expire_after: float | None = None
    send_window: SendWindow | None = None


def scheduled(when: str, **rule: object) -> Candidate:
    return Candidate(rule="r", sink="ro", to="+40740123456", text="hi", meta={SEND_AT: when})


def test_a_scheduled_send_waits_for_its_time_and_its_offset() -> None:
    policy = SchedulePolicy(Rule(send_offset=-86400.0), BUCHAREST)  # the day before
    verdict, due = decide([policy], scheduled("2026-12-10 10:00"), at("2026-12-07 12:00"))
    assert verdict.act is Act.WAIT and due == verdict.until == at("2026-12-09 10:00")
    assert verdict.reason == "scheduled for 2026-12-09T08:00:00Z"


def test_a_past_time_sends_at_once_unless_it_expired() -> None:
    lenient = SchedulePolicy(Rule(), BUCHAREST)
    assert decide([lenient], scheduled("2026-12-07 09:00"), at("2026-12-07 12:00"))[0].act is Act.SEND
    strict = SchedulePolicy(Rule(expire_after=3600.0), BUCHAREST)
    verdict, _ = decide([strict], scheduled("2026-12-07 09:00"), at("2026-12-07 12:00"))
    assert (verdict.act, verdict.reason) == (Act.SKIP, "expired (was due 2026-12-07T07:00:00Z)")


def test_an_unreadable_date_fails_the_record_with_its_value() -> None:
    verdict, _ = decide(
        [SchedulePolicy(Rule(), BUCHAREST)], scheduled("next tuesday"), at("2026-12-07 12:00")
    )
    assert verdict.act is Act.FAIL and "'next tuesday' is not a date-time" in verdict.reason


def test_with_a_window_the_later_of_the_two_wins() -> None:
    rule = Rule(send_window=window())
    policies = [SchedulePolicy(rule, BUCHAREST), WindowPolicy(window(), BUCHAREST)]
    late = decide(policies, scheduled("2026-12-07 22:00"), at("2026-12-07 12:00"))[0]  # due after hours
    assert late.act is Act.WAIT and local(late.until or 0) == "Tue 2026-12-08 08:00"
    assert late.reason.startswith("quiet hours until")
    early = decide(policies, scheduled("2026-12-07 15:00"), at("2026-12-07 06:00"))[0]  # due in hours
    assert local(early.until or 0) == "Mon 2026-12-07 15:00" and early.reason.startswith("scheduled for")


def test_expiry_is_judged_when_the_message_would_go_not_foretold() -> None:
    rule = Rule(expire_after=3600.0)
    policies = [SchedulePolicy(rule, BUCHAREST), WindowPolicy(window(), BUCHAREST)]
    verdict, due = decide(policies, scheduled("2026-12-07 19:59"), at("2026-12-07 20:01"))
    assert verdict.act is Act.WAIT and local(verdict.until or 0) == "Tue 2026-12-08 08:00"
    kept = Candidate(rule="r", sink="ro", to="+40740123456", text="hi", due_at=due)
    assert decide(policies, kept, at("2026-12-08 08:00"))[0].act is Act.SKIP  # by then it has expired


def test_a_message_checked_again_keeps_the_due_time_the_ledger_kept() -> None:
    policy = SchedulePolicy.for_rule(Rule(send_at=None, expire_after=600.0), PolicyContext(BUCHAREST))
    assert policy is not None and not isinstance(policy, Scheduling)  # due when claimed: nothing to work out
    kept = Candidate(rule="r", sink="ro", to="+40740123456", text="hi", due_at=at("2026-12-07 08:00"))
    assert decide([policy], kept, at("2026-12-07 08:05"))[0].act is Act.SEND
    verdict = decide([policy], kept, at("2026-12-07 08:11"))[0]
    assert verdict.act is Act.SKIP and "was due 2026-12-07T06:00:00Z" in verdict.reason


# -- opt-out lists ----------------------------------------------------------------------------------


async def test_an_opt_out_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    (tmp_path / "stop.csv").write_text("+40740000001\n0741 000 002\n")  # no header, first column
    lists = OptOuts([SuppressConfig(path=Path("stop.csv"), country="RO")], tmp_path)
    await lists.refresh(None)
    assert "+40740000001" in lists and "+40741000002" in lists and "+40742000003" not in lists
    policy = OptOutPolicy(lists)
    assert policy.check(CANDIDATE, 0.0).act is Act.SEND
    listed = Candidate(rule="r", sink="ro", to="+40741000002", text="hi")
    assert (policy.check(listed, 0.0).act, policy.check(listed, 0.0).reason) == (Act.SKIP, "opted out")
    (tmp_path / "stop.csv").write_text("Phone\n0742 000 003\n")  # a header this time
    await lists.refresh(None)
    assert "+40742000003" in lists and "+40741000002" not in lists


async def test_a_list_whose_column_is_gone_keeps_its_last_numbers_and_a_list_file_gone_none(
    tmp_path: Path,
) -> None:
    stop = tmp_path / "stop.csv"
    stop.write_text("Mobile\n0740 000 001\n")
    lists = OptOuts([SuppressConfig(path=Path("stop.csv"), column="Mobile", country="RO")], tmp_path)
    await lists.refresh(None)
    assert "+40740000001" in lists
    stop.write_text("Phone\n0740 000 002\n")  # the column renamed: a mistake, not a new list
    await lists.refresh(None)
    assert "+40740000001" in lists and "+40740000002" not in lists
    stop.unlink()  # the file taken away: the list is emptied on purpose
    await lists.refresh(None)
    assert "+40740000001" not in lists


async def test_an_opt_out_file_once_normalised_is_read_from_the_ledger_until_it_changes(
    tmp_path: Path,
) -> None:
    stop = tmp_path / "stop.csv"
    stop.write_text("Phone\n0740 000 001\nnot a number\n")
    config = [SuppressConfig(path=Path("stop.csv"), country="RO")]
    async with joined(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path) as ledger:
        await OptOuts(config, tmp_path).refresh(ledger, keep=False)  # `preview`: looks only
        assert await ledger.get_note(CACHE_SCOPE, str(stop)) is None
        await OptOuts(config, tmp_path).refresh(ledger)
        kept = json.loads(await ledger.get_note(CACHE_SCOPE, str(stop)) or "{}")
        assert (kept["numbers"], kept["bad"], kept["first_bad"]) == (["+40740000001"], 1, "not a number")
        # The next start takes the kept numbers (altered here to tell them apart) for the same bytes.
        await ledger.set_note(CACHE_SCOPE, str(stop), json.dumps({**kept, "numbers": ["+40749999999"]}))
        again = OptOuts(config, tmp_path)
        await again.refresh(ledger)
        assert "+40749999999" in again and "+40740000001" not in again
        stop.write_text("Phone\n0740 000 002\n")  # changed: normalised afresh, and kept again
        changed = OptOuts(config, tmp_path)
        await changed.refresh(ledger)
        assert "+40740000002" in changed and "+40749999999" not in changed
        assert json.loads(await ledger.get_note(CACHE_SCOPE, str(stop)) or "{}")["numbers"] == [
            "+40740000002"
        ]


def test_an_opt_out_file_names_its_column(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("Name;Mobile\nAna;+40740000001\n")
    assert read_list(tmp_path / "list.csv", "Mobile", None) == {"+40740000001"}
    with pytest.raises(ValueError, match="no column 'Phone'"):
        read_list(tmp_path / "list.csv", "Phone", None)
