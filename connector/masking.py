"""Numbers as the HTTP answers and the status page show them: all but the last 3 digits hidden."""

from __future__ import annotations

import re

# Something written like a phone number: digits with the separators people type between them.
_WRITTEN_NUMBER = re.compile(r"\+?\d(?:[\d ().-]*\d)?")
_NUMBER_DIGITS = 7  # fewer digits are a count, a code or a time, not a phone number
_DATE = re.compile(r"\d{4}-\d\d-\d\d")  # the times reasons quote (`scheduled for 2025-01-31 ...`)


def mask_number(number: str) -> str:
    """All but the last 3 digits hidden: enough for a person to tell two numbers apart."""
    digits = sum(c.isdigit() for c in number)
    seen = 0
    out: list[str] = []
    for char in number:
        if char.isdigit():
            seen += 1
            out.append(char if seen > digits - 3 else "*")
        else:
            out.append(char)
    return "".join(out)


def masked_reason(reason: str, recipient: str) -> str:
    """A reason with the recipient masked where it quotes it (a provider echoing the number). A
    message that failed before it had a recipient (not a number, a landline) quotes what was
    written instead: whatever looks like a phone number is masked then."""
    if not recipient:
        return _WRITTEN_NUMBER.sub(_mask_if_number, reason)
    masked = mask_number(recipient)
    for shown in {recipient, recipient.lstrip("+")} - {""}:
        reason = reason.replace(shown, masked)
    return reason


def written_number(reason: str) -> str:
    """The first thing in a reason written like a phone number ("" if none): where a message that
    failed before it had a recipient quotes what it was given."""
    for match in _WRITTEN_NUMBER.finditer(reason):
        if _looks_like_number(match.group(0)):
            return match.group(0)
    return ""


def _mask_if_number(match: re.Match[str]) -> str:
    text = match.group(0)
    return mask_number(text) if _looks_like_number(text) else text


def _looks_like_number(text: str) -> bool:
    return not _DATE.match(text) and sum(c.isdigit() for c in text) >= _NUMBER_DIGITS
