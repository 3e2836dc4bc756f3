"""How many SMS parts a text takes, and what Robo SMS (RO) charges for it.

Parts: a text that fits the GSM 03.38 alphabet is sent in 7-bit septets, 160 to a single message
or 153 to each part of a concatenated one (the other 7 carry the part header). Anything outside
that alphabet sends the whole text as UCS-2: 70 UTF-16 code units, or 67 per part. Neither an
escaped GSM character (two septets) nor a surrogate pair (an emoji) is split between two parts,
so a part may carry one unit fewer than the limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# GSM 03.38 default alphabet, in table order; the escape code 0x1B is not a character.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: sent as escape + code, so each takes two septets.
_GSM_EXTENSION = frozenset("\f^{}\\[~]|€")
_GSM_ALL = _GSM_BASIC | _GSM_EXTENSION

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    encoding: Literal["GSM-7", "UCS-2"]
    characters: int  # units counted against the limits: septets for GSM-7, UTF-16 units for UCS-2
    segments: int  # 0 for an empty text


def count_segments(text: str) -> SegmentInfo:
    present = set(text)
    if present <= _GSM_ALL:
        escaped = present & _GSM_EXTENSION
        septets = len(text) + sum(text.count(ch) for ch in escaped)
        if escaped and septets > GSM_SINGLE:
            parts = _pack((2 if ch in _GSM_EXTENSION else 1 for ch in text), GSM_PART)
        else:
            parts = _parts(septets, GSM_SINGLE, GSM_PART)
        return SegmentInfo("GSM-7", septets, parts)
    units = len(text.encode("utf-16-le")) // 2
    if units != len(text) and units > UCS2_SINGLE:  # surrogate pairs present
        parts = _pack((2 if ord(ch) > 0xFFFF else 1 for ch in text), UCS2_PART)
    else:
        parts = _parts(units, UCS2_SINGLE, UCS2_PART)
    return SegmentInfo("UCS-2", units, parts)


def _parts(units: int, single: int, part: int) -> int:
    if units == 0:
        return 0
    if units <= single:
        return 1
    return math.ceil(units / part)


def _pack(costs: Iterable[int], part: int) -> int:
    """Parts needed when no character may straddle two parts (called only past a single message)."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts += 1
            used = cost
        else:
            used += cost
    return parts
