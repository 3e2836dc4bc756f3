"""Event ids as people write them: a prefix of the 32 hex digits names the ids in a key range."""

from __future__ import annotations

import string

HEX = frozenset(string.hexdigits.lower())


def key_range(prefix: str) -> tuple[str, str | None]:
    """[low, high) of the keys starting with `prefix` (lower-case hex); high None: to the end.

    The bound is the prefix with its last digit raised (with carry), not a sentinel character:
    under a language collation (PostgreSQL's default) punctuation sorts unlike in bytes."""
    digits = "0123456789abcdef"
    head = prefix
    while head and head[-1] == "f":
        head = head[:-1]
    if not head:
        return prefix, None
    return prefix, head[:-1] + digits[digits.index(head[-1]) + 1]


def is_id_prefix(text: str) -> bool:
    return bool(text) and set(text) <= HEX
