"""The names of the CSV drop folder: which files are taken, a dropped file's identity, and where a
file and its results or reason go without overwriting anything. Plain functions; no reading."""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

_TEMP_PREFIXES = (".", "~$")  # hidden files, LibreOffice `.~lock.x#`, Office owner files `~$x.csv`
_TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", "~")


def is_candidate(name: str, pattern: str) -> bool:
    """Whether a file name in the drop folder is one to take (case-insensitive, as Windows users expect)."""
    lowered = name.lower()
    if lowered.startswith(_TEMP_PREFIXES) or lowered.endswith(_TEMP_SUFFIXES):
        return False
    return fnmatch.fnmatchcase(lowered, pattern.lower())


def file_identity(name: str, st: os.stat_result) -> str:
    """Short id of one file as dropped: the same file re-read after a crash keeps it, a new copy does not."""
    seed = f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"
    return hashlib.sha256(seed.encode("utf-8", "surrogateescape")).hexdigest()[:12]


def results_name(name: str) -> str:
    path = Path(name)
    return f"{path.stem}.results{path.suffix or '.csv'}"


def reason_name(name: str) -> str:
    return f"{name}.reason.txt"


def free_names(
    folder: Path, name: str, companion: Callable[[str], str], now: datetime | None = None
) -> tuple[Path, Path]:
    """Destinations for a file and its companion that overwrite nothing: `x.csv`, else `x-<UTC time>.csv`."""
    if not (folder / name).exists() and not (folder / companion(name)).exists():
        return folder / name, folder / companion(name)
    path = Path(name)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    attempt = 1
    while True:
        tail = "" if attempt == 1 else f"-{attempt}"
        candidate = f"{path.stem}-{stamp}{tail}{path.suffix}"
        if not (folder / candidate).exists() and not (folder / companion(candidate)).exists():
            return folder / candidate, folder / companion(candidate)
        attempt += 1
