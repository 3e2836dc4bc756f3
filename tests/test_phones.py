from __future__ import annotations

import pytest

from connector.phones import PhoneResult, listed, normalise

USABLE = [
    # raw, region, E.164
    ("0740123456", "RO", "+40740123456"),
    ("03001234567", "PK", "+923001234567"),
    ("+40740123456", "PK", "+40740123456"),  # a + prefix wins over the rule's country
    ("+92 300 1234567", "RO", "+923001234567"),
    ("0040 740 123 456", None, "+40740123456"),  # 00 international prefix, no country needed
    ("0092-300-1234567", "RO", "+923001234567"),
    ("(0740) 123.456", "RO", "+40740123456"),
    ("+40 (740) 123-456", None, "+40740123456"),
    ("  0740 123 456  ", "RO", "+40740123456"),
    ("0740123456", "ro", "+40740123456"),  # region in any case
    ("+1 650 253 0000", None, "+16502530000"),  # FIXED_LINE_OR_MOBILE: US does not tell them apart
    ("+44 70 1234 5678", None, "+447012345678"),  # PERSONAL_NUMBER forwards to a phone
    ("+44 76 4012 3456", None, "+447640123456"),  # PAGER
    ("+44 56 1234 5678", None, "+445612345678"),  # VOIP
]

REFUSED = [
    # raw, region, problem
    ("", "RO", "no recipient number"),
    ("   ", "RO", "no recipient number"),
    ("0212345678", "RO", "'0212345678' is a fixed-line number (SMS needs a mobile)"),
    ("+40 21 312 3456", None, "'+40 21 312 3456' is a fixed-line number (SMS needs a mobile)"),
    ("0800 123 456", "RO", "'0800 123 456' is a toll-free number (SMS needs a mobile)"),
    ("0900 123 456", "RO", "'0900 123 456' is a premium-rate number (SMS needs a mobile)"),
    ("0801 123 456", "RO", "'0801 123 456' is a shared-cost number (SMS needs a mobile)"),
    ("0372 123 456", "RO", "'0372 123 456' is a universal access number (SMS needs a mobile)"),
    ("+49 177 99 1234567", None, "'+49 177 99 1234567' is a voicemail access number (SMS needs a mobile)"),
    (
        "+40740123456 ext. 12",
        "RO",
        "'+40740123456 ext. 12' has an extension (SMS needs a plain mobile number)",
    ),
    ("0740123456 x5", "RO", "'0740123456 x5' has an extension (SMS needs a plain mobile number)"),
    (
        "0740123456",
        None,
        "'0740123456' has no country prefix (write it as +40..., +92...) and the rule sets no country",
    ),
    ("+999 123456789", None, "'+999 123456789' has an unknown country prefix"),
    ("call me", "RO", "'call me' is not a phone number"),
    ("07401", "RO", "'07401' is not a valid RO phone number"),
    ("0740123456789", "RO", "'0740123456789' is not a valid RO phone number"),
    ("+40 7", None, "'+40 7' is too short to be a phone number"),
]


@pytest.mark.parametrize(("raw", "region", "e164"), USABLE)
def test_usable_numbers_become_e164(raw: str, region: str | None, e164: str) -> None:
    result = normalise(raw, region)
    assert result == PhoneResult(e164, None)
    assert result.ok


@pytest.mark.parametrize(("raw", "region", "problem"), REFUSED)
def test_unusable_numbers_say_why(raw: str, region: str | None, problem: str) -> None:
    result = normalise(raw, region)
    assert result == PhoneResult(None, problem)
    assert not result.ok


def test_a_long_value_is_quoted_shortened() -> None:
    raw = "Hello, this is the whole message pasted into the phone column by mistake"
    problem = normalise(raw, "RO").problem
    assert problem is not None
    assert raw not in problem
    assert problem.startswith(repr(raw[:40] + "...")[:-1])


def test_results_are_cached_per_raw_value_and_region() -> None:
    normalise.cache_clear()
    first = normalise("0740 999 888", "RO")
    again = normalise("0740 999 888", "RO")
    other_region = normalise("0740 999 888", "PK")
    info = normalise.cache_info()
    assert again is first
    assert (info.hits, info.misses) == (1, 2)
    assert other_region != first
    assert info.maxsize is not None  # bounded: a long-running webhook must not grow it forever


@pytest.mark.parametrize(("raw", "region", "expected"), USABLE)
def test_a_listed_number_reads_as_the_recipient_it_stops(raw: str, region: str | None, expected: str) -> None:
    # An opt-out list entry must compare equal to the E.164 the rules make of the same number.
    assert listed(raw, region) == normalise(raw, region).e164 == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("0212345678", "RO", "+40212345678"),  # a landline on a list is harmless: kept
        ("0740 123 456", None, None),  # no country to read it in
        ("not a number", "RO", None),
        ("", "RO", None),
        ("07401", "RO", None),  # too short to be anyone's number
        ("0740123456 ext. 12", "RO", None),
    ],
)
def test_a_listed_value_that_is_no_number_is_none(raw: str, region: str | None, expected: str | None) -> None:
    assert listed(raw, region) == expected
