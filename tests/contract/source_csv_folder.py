"""csv_folder: the orders dropped as a file into a tmp inbox; statuses in processed/*.results.csv."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncIterator
from pathlib import Path

from connector.config_loader import load_config
from connector.runtime import Runtime
from tests.contract.source_base import HEADER, ORDERS, SourceHarness, SourceRig, config_text

SOURCE_YAML = "    type: csv_folder\n    path: ./inbox\n    settle: 0s\n    key_column: Order ID\n"


def orders_csv() -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(ORDERS)
    return out.getvalue().encode()


class CsvFolderRig(SourceRig):
    @property
    def inbox(self) -> Path:
        return self.folder / "inbox"

    async def one_pass(self) -> None:
        await self.runtime.once()

    async def second_pass(self) -> None:
        (self.inbox / "orders.csv").write_bytes(orders_csv())
        await self.runtime.once()

    async def statuses(self) -> dict[str, str]:
        done = sorted((self.inbox / "processed").glob("*.results.csv"), key=lambda p: p.stat().st_mtime_ns)
        if not done:
            return {}
        text = done[-1].read_bytes().decode("utf-8-sig")
        return {row["Order ID"]: row.get("SMS Status", "") for row in csv.DictReader(io.StringIO(text))}


class CsvFolderHarness(SourceHarness):
    type_name = "csv_folder"
    previewed = len(ORDERS)

    @contextlib.asynccontextmanager
    async def rig(self, tmp_path: Path) -> AsyncIterator[SourceRig]:
        (tmp_path / "inbox").mkdir()
        (tmp_path / "inbox" / "orders.csv").write_bytes(orders_csv())
        (tmp_path / "config.yaml").write_text(config_text(SOURCE_YAML))
        runtime = await Runtime.open(load_config(tmp_path / "config.yaml"))
        try:
            yield CsvFolderRig(runtime, tmp_path)
        finally:
            await runtime.close()
