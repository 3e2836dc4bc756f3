"""Recipient numbers: whatever a sheet, CSV file or webhook holds, turned into E.164 or a reason.

A reason is what an operations team reads in the status cell, so it quotes the value as written
and says what is wrong with it in plain words.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType

# Types that cannot receive an SMS, and how a status cell names them.
_REFUSED_TYPES: dict[int, str] = {
    PhoneNumberType.FIXED_LINE: "a fixed-line number",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
    PhoneNumberType.UAN: "a universal access number",
}
# Accepted on purpose, because refusing them would fail people who can actually read an SMS:
# FIXED_LINE_OR_MOBILE is what countries whose plans do not tell the two apart (US, CA, CN, ...)
# return for their mobiles; PERSONAL_NUMBER forwards to the owner's phone; VOIP numbers are often
# SMS-capable app or cloud numbers; PAGER networks that survive take text. The provider still
# refuses what it cannot deliver, and that refusal becomes the record's status.
_ACCEPTED_TYPES = frozenset(
    {
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
        PhoneNumberType.PERSONAL_NUMBER,
        PhoneNumberType.VOIP,
        PhoneNumberType.PAGER,
    }
)
_QUOTE_LIMIT = 40  # a whole message pasted into the phone column must not flood the status cell


@dataclass(frozen=True, slots=True)
class PhoneResult:
    e164: str | None  # "+40740123456" when usable
    problem: str | None  # why not, e.g. "'0212345678' is a fixed-line number (SMS needs a mobile)"

    @property
    def ok(self) -> bool:
        return self.e164 is not None


# Bounded cache: a feed repeats the same few recipients (and the benchmark says parsing dominates),
# while an unbounded cache would grow with every number a long-running webhook ever saw.
@functools.lru_cache(maxsize=65_536)
def normalise(raw: str, region: str | None) -> PhoneResult:
    """E.164 for `raw`, read as a number of `region` (e.g. "RO") when written without a prefix."""
    text = raw.strip()
    if not text:
        return PhoneResult(None, "no recipient number")
    # "00" is the international prefix almost everywhere; phonenumbers only knows that when it is
    # given a region, and a rule may have none.
    if text.startswith("00"):
        text = "+" + text[2:]
    region = region.upper() if region else None
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return PhoneResult(None, f"{_quote(raw)} {_parse_problem(exc, text, region)}")
    if number.extension:
        return PhoneResult(None, f"{_quote(raw)} has an extension (SMS needs a plain mobile number)")
    # number_type() is UNKNOWN exactly when is_valid_number() is False (both run the same region
    # lookup and pattern match); asking once saves a quarter of the cost of an uncached number.
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        where = phonenumbers.region_code_for_country_code(number.country_code or 0)
        country = f"a valid {where}" if where != "ZZ" else "a valid"
        return PhoneResult(None, f"{_quote(raw)} is not {country} phone number")
    if kind not in _ACCEPTED_TYPES:
        what = _REFUSED_TYPES.get(kind, "not a mobile number")
        return PhoneResult(None, f"{_quote(raw)} is {what} (SMS needs a mobile)")
    return PhoneResult(phonenumbers.format_number(number, PhoneNumberFormat.E164), None)


def listed(raw: str, region: str | None) -> str | None:
    """E.164 for a number on a list (opt-outs), or None when it is not one: parsed and formatted,
    but not judged, uncached. A list is read once per change, and its 100,000 numbers must
    neither pay for the mobile check (a landline on an opt-out list is harmless) nor push the
    recipients out of `normalise`'s cache."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except NumberParseException:
        return None
    if number.extension or not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _parse_problem(exc: NumberParseException, text: str, region: str | None) -> str:
    if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
        if region is None and not text.startswith("+"):
            return "has no country prefix (write it as +40..., +92...) and the rule sets no country"
        return "has an unknown country prefix"
    if exc.error_type in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
        return "is too short to be a phone number"
    if exc.error_type == NumberParseException.TOO_LONG:
        return "is too long to be a phone number"
    return "is not a phone number"


def _quote(raw: str) -> str:
    raw = raw.strip()
    return repr(raw if len(raw) <= _QUOTE_LIMIT else raw[:_QUOTE_LIMIT] + "...")
