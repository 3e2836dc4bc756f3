"""Which files of a drop folder are complete: the settle clock of the CSV source, and watchdog's events.

A file is complete once its size and mtime have stood still for `settle`. Every look re-stats the
file (events can be lost or come late); a file that could not even be moved to failed/ is left out
until it changes. Plain bookkeeping on the event loop: the stat calls are cheap and few.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from sources.csv_names import is_candidate


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic time from which the file is known to have stood still


class WatchSettings(Protocol):
    @property
    def pattern(self) -> str: ...
    @property
    def settle(self) -> float: ...


class Settling:
    """The candidate files of one folder and how long each has stood still."""

    def __init__(self, folder: Path, settings: Callable[[], WatchSettings]) -> None:
        self.folder = folder
        self._settings = settings  # read at each look: the source's config as it is now
        self._seen: dict[Path, _Seen] = {}
        self._stuck: dict[Path, tuple[int, int]] = {}  # could not even be moved to failed/

    def __contains__(self, path: Path) -> bool:
        return path in self._seen

    def __bool__(self) -> bool:
        return bool(self._seen)

    def names(self) -> list[str]:
        """Names of the files in the folder that match, in order (OSError when it cannot be listed)."""
        with os.scandir(self.folder) as entries:
            pattern = self._settings().pattern
            return sorted(e.name for e in entries if e.is_file() and is_candidate(e.name, pattern))

    def wants(self, path: Path) -> bool:
        return path.parent == self.folder and is_candidate(path.name, self._settings().pattern)

    def observe(self, path: Path) -> None:
        """Record the file's size and mtime; any change restarts its quiet time."""
        try:
            st = path.stat()
        except OSError:
            self._seen.pop(path, None)
            return
        if not stat.S_ISREG(st.st_mode):
            return
        seen = self._seen.get(path)
        if seen is not None and (seen.size, seen.mtime_ns) == (st.st_size, st.st_mtime_ns):
            return
        now = time.monotonic()
        since = now
        if seen is None:
            # First sight: a file whose mtime is already old has stood still that long, so files found
            # at start-up are not held back. Capped at `settle`, so a clock skew costs at most that.
            age = time.time() - st.st_mtime_ns / 1e9
            since = now - min(max(age, 0.0), self._settings().settle)
        self._seen[path] = _Seen(st.st_size, st.st_mtime_ns, since)

    def settled(self) -> tuple[list[Path], float | None]:
        """Files quiet for `settle` now, and when the next one will be (re-stat'ed: events can be lost)."""
        now = time.monotonic()
        settle = self._settings().settle
        ready: list[Path] = []
        next_at: float | None = None
        for path in list(self._seen):
            self.observe(path)
            seen = self._seen.get(path)
            if seen is None:
                continue
            if self._stuck.get(path) == (seen.size, seen.mtime_ns):
                del self._seen[path]
                continue
            at = seen.since + settle
            if at <= now:
                ready.append(path)
            else:
                next_at = at if next_at is None else min(next_at, at)
        return sorted(ready), next_at

    def young(self, ready: list[Path]) -> list[str]:
        """Names of the files seen that are not among `ready`: still being written, or just dropped."""
        return sorted(path.name for path in self._seen if path not in ready)

    def look_again(self, path: Path, seconds: float) -> None:
        """Offered again after `seconds` (another instance is taking it: it may give it up)."""
        self.observe(path)
        seen = self._seen.get(path)
        if seen is not None:
            seen.since = time.monotonic() + seconds - self._settings().settle

    def forget(self, path: Path) -> None:
        """Taken now; an event or the next rescan finds it again if it stays."""
        self._seen.pop(path, None)

    def stuck(self, path: Path, st: os.stat_result) -> None:
        """It cannot be moved out of the folder: leave it alone until it changes."""
        self._stuck[path] = (st.st_size, st.st_mtime_ns)

    def unstuck(self, path: Path) -> None:
        self._stuck.pop(path, None)


class FolderEvents(FileSystemEventHandler):
    """Runs on watchdog's thread: only hands paths over to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, notice: Callable[[str], None]) -> None:
        self._loop = loop
        self._notice = notice

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if event.event_type in ("created", "modified", "closed"):
            path = event.src_path
        elif event.event_type == "moved":
            path = event.dest_path
        else:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while watchdog still delivered
            self._loop.call_soon_threadsafe(self._notice, os.fsdecode(path))
