"""google_sheets: the orders in a worksheet of the Sheets API emulator, reached with a generated
service-account key; statuses in the sheet's status cells."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from connector.config_loader import load_config
from connector.runtime import Runtime
from tests.contract.source_base import HEADER, ORDERS, WANTED, SourceHarness, SourceRig, config_text
from tests.emulators.base import Fault
from tests.emulators.keys import service_account_file
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import SheetsEmulator

SID = "1ContractSheet_key-7"
TAB = "Orders"
STATUS = "SMS Status"
WRITES = ("values.update", "values.batchUpdate", "values.append", "batchUpdate")


class GoogleSheetsRig(SourceRig):
    def __init__(self, runtime: Runtime, folder: Path, emulator: SheetsEmulator, key_file: Path) -> None:
        super().__init__(runtime, folder)
        self.emulator = emulator
        self.key_file = key_file

    def cells(self) -> list[list[str]]:
        return self.emulator.values(SID, TAB)

    async def one_pass(self) -> None:
        await self.runtime.once()

    async def second_pass(self) -> None:
        # Polled again, after a person cleared the statuses: the rows are due again, and only the
        # ledger can tell they were done.
        header, *rows = self.cells()
        col = header.index(STATUS) + 1
        for number, row in enumerate(rows, start=2):
            if row[0] in WANTED:
                self.emulator.set_cell(SID, TAB, number, col, "")
        await self.runtime.once()

    async def statuses(self) -> dict[str, str]:
        header, *rows = self.cells()
        if STATUS not in header:
            return {}
        col = header.index(STATUS)
        return {row[0]: row[col] for row in rows if len(row) > col and row[col]}

    def snapshot(self) -> dict[str, Any]:
        counts = {kind: self.emulator.counts[kind] for kind in WRITES}
        return {**super().snapshot(), "cells": self.cells(), "writes": len(self.emulator.writes), **counts}

    def sensitive(self) -> list[str]:
        key = json.loads(self.key_file.read_text())["private_key"]
        lines = [line for line in key.splitlines() if line and not line.startswith("-----")]
        tokens = {
            str(r["headers"].get("authorization", "")).partition(" ")[2] for r in list(self.emulator.requests)
        }
        return lines + sorted(t for t in tokens if t)

    async def force_failure(self) -> None:
        self.emulator.expire_tokens()  # a token exchange on the way
        self.emulator.inject(Fault(status=503, headers={"Retry-After": "0"}), Fault(status=403))


class GoogleSheetsHarness(SourceHarness):
    type_name = "google_sheets"
    previewed = len(ORDERS)  # every row without a status is due

    @contextlib.asynccontextmanager
    async def rig(self, tmp_path: Path) -> AsyncIterator[SourceRig]:
        emulator = SheetsEmulator()
        emulator.add_spreadsheet(SID, {TAB: [[*HEADER, STATUS], *[list(order) for order in ORDERS]]})
        with EmulatorServer(emulator) as base:
            key = service_account_file(tmp_path / "keys", f"{base}/token")
            source_yaml = (
                f"    type: google_sheets\n    spreadsheet: {SID}\n    worksheet: {TAB}\n"
                f"    credentials: keys/{key.name}\n    key_column: Order ID\n    api_url: {base}\n"
                "    timeout: 5s\n    max_retry_time: 3s\n"
            )
            (tmp_path / "config.yaml").write_text(config_text(source_yaml))
            runtime = await Runtime.open(load_config(tmp_path / "config.yaml"))
            try:
                yield GoogleSheetsRig(runtime, tmp_path, emulator, key)
            finally:
                await runtime.close()
