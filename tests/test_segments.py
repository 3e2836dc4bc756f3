from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from connector.events import Cost
from connector.segments import SegmentInfo, count_segments
from sinks.robo_sms_pk import RoboSmsPkConfig, RoboSmsPkSink
from sinks.robo_sms_ro import RoboSmsRoConfig, RoboSmsRoSink

EMOJI = "\U0001f600"  # two UTF-16 code units

CASES = [
    # id, text, expected
    ("empty", "", SegmentInfo("GSM-7", 0, 0)),
    ("short", "Hi Ana", SegmentInfo("GSM-7", 6, 1)),
    ("gsm 160", "a" * 160, SegmentInfo("GSM-7", 160, 1)),
    ("gsm 161", "a" * 161, SegmentInfo("GSM-7", 161, 2)),
    ("gsm 2 parts full", "a" * 306, SegmentInfo("GSM-7", 306, 2)),
    ("gsm 2 parts + 1", "a" * 307, SegmentInfo("GSM-7", 307, 3)),
    ("gsm accents in basic set", "Çà vous, Øre £5 ¥ §¿¡ ΔΩ", SegmentInfo("GSM-7", 24, 1)),
    ("newline and CR are basic", "a\r\nb", SegmentInfo("GSM-7", 4, 1)),
    ("euro is 2 septets", "€" * 80, SegmentInfo("GSM-7", 160, 1)),
    ("euro pushes past 160", "a" * 159 + "€", SegmentInfo("GSM-7", 161, 2)),
    ("every extension char", "^{}\\[~]|€\f", SegmentInfo("GSM-7", 20, 1)),
    # 152 septets then an escaped character: it must not straddle parts 1 and 2.
    ("escape not split at 153", "a" * 152 + "{" + "a" * 152, SegmentInfo("GSM-7", 306, 3)),
    ("escape fits at 153", "a" * 151 + "{" + "a" * 153, SegmentInfo("GSM-7", 306, 2)),
    ("ucs2 70", "ă" * 70, SegmentInfo("UCS-2", 70, 1)),
    ("ucs2 71", "ă" * 71, SegmentInfo("UCS-2", 71, 2)),
    ("ucs2 2 parts full", "ș" * 134, SegmentInfo("UCS-2", 134, 2)),
    ("ucs2 2 parts + 1", "ș" * 135, SegmentInfo("UCS-2", 135, 3)),
    ("one non-gsm char makes it all ucs2", "a" * 69 + "ț", SegmentInfo("UCS-2", 70, 1)),
    ("urdu", "آپ کا آرڈر", SegmentInfo("UCS-2", 10, 1)),
    ("emoji counts 2 units", "Hi " + EMOJI, SegmentInfo("UCS-2", 5, 1)),
    ("emoji at 70", "a" * 68 + EMOJI, SegmentInfo("UCS-2", 70, 1)),
    ("emoji past 70", "a" * 69 + EMOJI, SegmentInfo("UCS-2", 71, 2)),
    # 66 units then an emoji: the pair goes whole into part 2.
    ("surrogate pair not split", "a" * 66 + EMOJI + "a" * 66, SegmentInfo("UCS-2", 134, 3)),
    ("surrogate pair fits", "a" * 65 + EMOJI + "a" * 67, SegmentInfo("UCS-2", 134, 2)),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_count_segments(text: str, expected: SegmentInfo) -> None:
    assert count_segments(text) == expected


@pytest.mark.parametrize(
    ("text", "credits"),
    [
        ("", 0),
        ("a", 1),
        ("a" * 480, 1),
        ("a" * 481, 2),
        ("a" * 960, 2),
        ("a" * 961, 3),
        ("ă" * 480, 1),  # characters, not bytes or segments
        (EMOJI * 480, 1),
    ],
)
async def test_ro_credits(text: str, credits: int) -> None:
    async with httpx.AsyncClient() as client:
        sink = RoboSmsRoSink("ro", RoboSmsRoConfig(type="robo_sms_ro", token=SecretStr("t")), client)
        assert sink.cost(text) == Cost(credits, "RO credit")


async def test_pk_costs_one_sms_per_segment() -> None:
    config = RoboSmsPkConfig(type="robo_sms_pk", email="ops@example.com", key=SecretStr("k"), mask="M")
    async with httpx.AsyncClient() as client:
        sink = RoboSmsPkSink("pk", config, client)
        assert [sink.cost(t) for t in ("hi", "x" * 161, "ă" * 71)] == [
            Cost(1, "PK SMS"),
            Cost(2, "PK SMS"),
            Cost(2, "PK SMS"),
        ]
        assert str(sink.cost("hi")) == "1 PK SMS(s)"
