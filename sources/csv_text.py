"""How the bytes of a dropped file become text: its encoding, and Excel's `sep=` first line.

ERPs and Excel write UTF-8 (with or without a BOM), Windows-1252, or UTF-16 with a BOM (Excel's
"Unicode Text", SAP's recommended export). The whole file is decoded once, streaming, before a row is
read, so that a file that breaks halfway goes to failed/ instead of leaving half its rows sent.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path
from typing import IO

from connector.errors import SourceError

CHUNK_BYTES = 1 << 20
BINARY_PROBE = 8192
_RESAVE = 'save it as "CSV UTF-8" or as "Unicode Text"'
# `sep=;` (any one punctuation character, or a tab), maybe quoted, maybe followed by more of the same
# delimiter: what a spreadsheet writes when it saves a sheet whose A1 holds the sep line.
_SEP_LINE = re.compile(r'"?sep=([^\w\s"]|\t)"?(?:\1)*[ \t]*(?:\r\n|\r|\n)?', re.IGNORECASE)
_FIRST_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")


class BadFile(SourceError):
    """The file cannot be read as a table at all; it goes to failed/ with this message as the reason."""


def detect_encoding(path: Path) -> str:
    """The codec to read the file with: utf-8-sig, utf-8, cp1252 (Excel's "CSV" on Western Windows) or
    utf-16 (either byte order; the codec reads the BOM and drops it)."""
    with path.open("rb") as f:
        head = f.read(BINARY_PROBE)
        if not head:
            raise BadFile("empty file")
        if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # UTF-32LE starts as UTF-16LE does
            raise BadFile(f"UTF-32 text is not supported: {_RESAVE}")
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            # Every other byte of UTF-16 text is NUL: binary is a NUL *character* here.
            if "\0" in head.decode("utf-16", "replace"):
                raise BadFile("binary file")
            f.seek(0)
            problem = _undecodable(f, "utf-16")
            if problem is None:
                return "utf-16"
            raise BadFile(f"not valid UTF-16 text ({problem}): the file is damaged or cut short")
        if b"\0" in head:
            if _bomless_utf16(head):
                raise BadFile(f"binary file: looks like UTF-16 text without a byte order mark; {_RESAVE}")
            raise BadFile("binary file")
        bom = head.startswith(codecs.BOM_UTF8)
        f.seek(0)
        problem = _undecodable(f, "utf-8")
        if problem is None:
            return "utf-8-sig" if bom else "utf-8"
        if not bom:  # a UTF-8 byte order mark rules Windows-1252 out
            f.seek(0)
            problem = _undecodable(f, "cp1252")
            if problem is None:
                return "cp1252"
    raise BadFile(f"not UTF-8 or Windows-1252 text ({problem})")


def _undecodable(f: IO[bytes], encoding: str) -> str | None:
    """Where the whole stream stops decoding, or None. Streams: a file of any size costs ~1 MiB."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    offset = 0
    while True:
        chunk = f.read(CHUNK_BYTES)
        carried = len(decoder.getstate()[0])  # bytes of a character split across chunks
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            at = offset - carried + e.start
            if encoding == "utf-16":  # the bytes alone say little: "truncated data", "illegal surrogate"
                return f"{e.reason}: bytes 0x{e.object[e.start : e.end].hex()} at offset {at}"
            return f"byte 0x{e.object[e.start : e.start + 1].hex()} at offset {at}"
        if not chunk:
            return None
        offset += len(chunk)


def _bomless_utf16(head: bytes) -> bool:
    """Whether the NULs fall on every other byte, as in mostly-ASCII UTF-16 without a BOM."""
    even, odd = head[0::2], head[1::2]
    return any(
        zeros.count(0) * 2 >= len(zeros) and other.count(0) * 16 <= len(other)
        for zeros, other in ((odd, even), (even, odd))
    )


def excel_sep_line(text: str) -> tuple[str, str] | None:
    """(the first line as written, with its line break; its delimiter) when `text` starts with Excel's
    `sep=` line, else None. `text` is decoded text, so a BOM is already gone."""
    first = _FIRST_LINE.match(text)
    line = first.group() if first else ""
    sep = _SEP_LINE.fullmatch(line)
    return (line, sep.group(1)) if sep else None
