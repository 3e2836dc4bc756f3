"""Which harness stands up which plug-in type. Registering a plug-in means adding its harness here."""

from __future__ import annotations

from tests.contract.sink_base import SinkHarness
from tests.contract.sink_dry_run import DryRunHarness
from tests.contract.sink_robo_sms_pk import RoboSmsPkHarness
from tests.contract.sink_robo_sms_ro import RoboSmsRoHarness
from tests.contract.source_base import SourceHarness
from tests.contract.source_csv_folder import CsvFolderHarness
from tests.contract.source_google_sheets import GoogleSheetsHarness
from tests.contract.source_webhook import WebhookHarness

SINK_HARNESSES: dict[str, type[SinkHarness]] = {
    h.type_name: h for h in (DryRunHarness, RoboSmsRoHarness, RoboSmsPkHarness)
}
SOURCE_HARNESSES: dict[str, type[SourceHarness]] = {
    h.type_name: h for h in (CsvFolderHarness, GoogleSheetsHarness, WebhookHarness)
}
