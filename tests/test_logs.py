"""Log set-up: secrets redacted everywhere, libraries' noise kept out."""

from __future__ import annotations

import io
import json
import logging

import structlog

from connector import logs


def test_secrets_are_redacted_in_events_and_library_logs() -> None:
    out = io.StringIO()
    logs.configure("json", "debug", secrets=["s3cr3t-token"], stream=out)
    structlog.get_logger("t").info(
        "sent", url="https://x/?key=s3cr3t-token", token="anything", nested={"a": ["s3cr3t-token"]}
    )
    logging.getLogger("aiohttp.client").warning("failed for s3cr3t-token")
    text = out.getvalue()
    assert "s3cr3t-token" not in text and "anything" not in text
    event = json.loads(text.splitlines()[0])
    assert (
        event["url"] == "https://x/?key=***" and event["token"] == "***" and event["nested"] == {"a": ["***"]}
    )
    assert "failed for ***" in text


def test_watchdog_stop_race_is_not_reported_as_an_error() -> None:
    out = io.StringIO()
    logs.configure("console", "info", stream=out)
    logging.getLogger("watchdog.observers.inotify").error(
        "InotifyEmitter.queue_events() called when the thread is inactive"
    )
    logging.getLogger("watchdog.observers.inotify").error("a real problem")
    assert "inactive" not in out.getvalue() and "a real problem" in out.getvalue()
