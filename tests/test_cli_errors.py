"""A rule problem that compiling finds is a config error like any other: located, printed once, exit 1,
whichever command meets it (`connector` subprocesses, as a user runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import connector

CONFIG = """\
state: sqlite:///connector.db
sinks:
  outbox: {type: dry_run}
sources:
  inbox: {type: csv_folder, path: ./inbox}
rules:
  - name: confirm
    source: inbox
    to: "{{ Phone }}"
    message: "Hi {{ row['Name'] }}"
    sink: outbox
"""
LOCATED = "config.yaml:9 rules.0.to: unknown name 'Phone' (the record is row, e.g. row['Phone'])"


@pytest.mark.parametrize("command", ["check", "once", "run", "preview"])
def test_an_unknown_name_in_a_template_is_located_for_every_command(tmp_path: Path, command: str) -> None:
    (tmp_path / "config.yaml").write_text(CONFIG)
    done = connector(command, "-c", "config.yaml", cwd=tmp_path, timeout=30)
    assert done.returncode == 1
    assert done.stderr.count(LOCATED) == 1, done.stderr
    assert "cannot start" not in done.stderr + done.stdout
    assert "1 problem(s) in the config" in done.stderr
    assert not (tmp_path / "connector.db").exists()  # refused before anything was opened
