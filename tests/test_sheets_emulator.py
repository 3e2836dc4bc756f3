"""The Sheets API emulator, driven by the real gspread and google-auth over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gspread
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth.exceptions import RefreshError
from google.auth.transport.requests import Request
from google.oauth2 import service_account

from tests.emulators import keys
from tests.emulators.base import Fault
from tests.emulators.server import EmulatorServer
from tests.emulators.sheets import (
    FORMULA_SHOWN,
    SCOPE,
    SCOPE_READONLY,
    SheetsEmulator,
    emulator_credentials,
    gspread_client,
)

KEY = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
ORDERS = [
    ["Order ID", "Phone", "Status"],
    ["A-1", "+40740123456", ""],
    ["A-2", "+40740123457", "sent 2024-01-01"],
    ["A-3", "+40740123458"],
]


@pytest.fixture
def emulator() -> SheetsEmulator:
    emulator = SheetsEmulator(public_keys=keys.public_keys())
    emulator.add_spreadsheet(KEY, {"Orders": ORDERS, "Bob's list": [["x", "y"]]}, title="Ops")
    return emulator


@pytest.fixture
def url(emulator: SheetsEmulator) -> Iterator[str]:
    with EmulatorServer(emulator) as base:
        yield base


@pytest.fixture
def key_file(tmp_path: Path, url: str) -> Path:
    return keys.service_account_file(tmp_path, f"{url}/token")


@pytest.fixture
def gc(key_file: Path, url: str) -> Iterator[gspread.Client]:
    client = gspread_client(key_file, url)
    yield client
    client.http_client.session.close()


def token_for(key_file: Path, scopes: list[str] | None = None) -> str:
    credentials = service_account.Credentials.from_service_account_file(
        str(key_file), scopes=scopes or [SCOPE]
    )
    credentials.refresh(Request())
    assert isinstance(credentials.token, str)
    return credentials.token


def api(url: str, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.request(method, f"{url}/v4/spreadsheets/{KEY}{path}", headers=headers, timeout=10,
                            **kwargs)


def wait_for(condition: Any, what: str) -> None:
    """Wait for something a background thread does; fails only if it never happens."""
    done = threading.Event()
    for _ in range(500):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError(f"never happened: {what}")


# -- OAuth --------------------------------------------------------------------------------------


def test_key_file_is_a_service_account_key(key_file: Path, url: str) -> None:
    info = json.loads(key_file.read_text())
    assert info["type"] == "service_account"
    assert info["token_uri"] == f"{url}/token"
    assert info["private_key_id"] in keys.public_keys()
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert key_file.stat().st_mode & 0o077 == 0


def test_token_exchange_verifies_the_signature(emulator: SheetsEmulator, key_file: Path, url: str) -> None:
    token = token_for(key_file)
    assert token.startswith("ya29.")
    assert emulator.counts["token"] == 1
    form = emulator.requests[-1]["body"].decode()
    assert "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in form
    assert api(url, "GET", "", token).status_code == 200


def test_assertion_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    strict = SheetsEmulator(public_keys={keys.private_key_id(): pem})
    with EmulatorServer(strict) as base:
        key_file = keys.service_account_file(tmp_path, f"{base}/token")
        with pytest.raises(RefreshError, match="Invalid JWT Signature"):
            token_for(key_file)


def test_token_endpoint_refuses_other_grants_and_missing_scope(url: str, key_file: Path) -> None:
    answer = requests.post(f"{url}/token", data={"grant_type": "client_credentials"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"] == "unsupported_grant_type"
    credentials = service_account.Credentials.from_service_account_file(str(key_file))
    with pytest.raises(RefreshError, match="invalid_scope"):
        credentials.refresh(Request())


def test_sheets_calls_need_an_issued_token(url: str) -> None:
    for token in (None, "ya29.made-up"):
        answer = api(url, "GET", "/values/Orders", token)
        assert answer.status_code == 401
        error = answer.json()["error"]
        assert (error["code"], error["status"]) == (401, "UNAUTHENTICATED")
        assert "invalid_token" in answer.headers["www-authenticate"]


def test_expired_token_is_renewed_by_google_auth(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    emulator.expire_tokens()
    assert worksheet.acell("A2").value == "A-1"
    assert emulator.counts["token"] == 2


def test_readonly_token_cannot_write(url: str, key_file: Path) -> None:
    token = token_for(key_file, [SCOPE_READONLY])
    assert api(url, "GET", "/values/Orders!A1", token).status_code == 200
    answer = api(url, "PUT", "/values/Orders!A1", token, params={"valueInputOption": "RAW"},
                 json={"values": [["x"]]})
    assert answer.status_code == 403
    assert answer.json()["error"]["status"] == "PERMISSION_DENIED"


# -- metadata and reads -------------------------------------------------------------------------


def test_open_by_key_and_worksheet_by_title(gc: gspread.Client) -> None:
    spreadsheet = gc.open_by_key(KEY)
    assert spreadsheet.title == "Ops"
    titles = [(w.title, w.index, w.row_count, w.col_count) for w in spreadsheet.worksheets()]
    assert titles == [("Orders", 0, 1000, 26), ("Bob's list", 1, 1000, 26)]
    assert spreadsheet.worksheet("Bob's list").id != spreadsheet.sheet1.id
    with pytest.raises(gspread.WorksheetNotFound):
        spreadsheet.worksheet("Nope")
    with pytest.raises(gspread.SpreadsheetNotFound):
        gc.open_by_key("missing")


def test_metadata_honours_fields_loosely(url: str, key_file: Path) -> None:
    token = token_for(key_file)
    full = api(url, "GET", "", token, params={"includeGridData": "false"}).json()
    assert full["properties"]["title"] == "Ops"
    assert full["sheets"][0]["properties"]["gridProperties"] == {"rowCount": 1000, "columnCount": 26}
    some = api(url, "GET", "", token, params={"fields": "sheets(properties(title,sheetId))"}).json()
    assert set(some) == {"sheets"}


def test_whole_sheet_read_has_the_api_shape(emulator: SheetsEmulator, url: str, key_file: Path) -> None:
    emulator.set_cell(KEY, "Orders", 7, 1, "A-7")  # rows 5 and 6 stay empty
    answer = api(url, "GET", "/values/Orders", token_for(key_file)).json()
    assert answer["range"] == "Orders!A1:Z1000"
    assert answer["majorDimension"] == "ROWS"
    assert answer["values"] == [*ORDERS[:1], ORDERS[1][:2], ORDERS[2], ORDERS[3], [], [], ["A-7"]]


def test_get_all_values_through_gspread(gc: gspread.Client) -> None:
    rows = gc.open_by_key(KEY).worksheet("Orders").get_all_values()
    assert rows == [ORDERS[0], ["A-1", "+40740123456", ""], ORDERS[2], ["A-3", "+40740123458", ""]]


@pytest.mark.parametrize(
    ("asked", "answered", "values"),
    [
        ("'Bob''s list'!A1:B2", "'Bob''s list'!A1:B2", [["x", "y"]]),
        ("'Bob''s list'", "'Bob''s list'!A1:Z1000", [["x", "y"]]),
        ("Orders!A2:Z", "Orders!A2:Z1000", [["A-1", "+40740123456"], ORDERS[2], ORDERS[3]]),
        ("Orders!B:B", "Orders!B1:B1000", [["Phone"], ["+40740123456"], ["+40740123457"], ["+40740123458"]]),
        ("Orders!3:3", "Orders!A3:Z3", [ORDERS[2]]),
        ("Orders!C4", "Orders!C4", None),
        ("B1:A2", "Orders!A1:B2", [ORDERS[0][:2], ORDERS[1][:2]]),
    ],
)
def test_ranges(url: str, key_file: Path, asked: str, answered: str, values: list[list[str]] | None) -> None:
    answer = api(url, "GET", f"/values/{requests.utils.quote(asked, safe='')}", token_for(key_file)).json()
    assert answer["range"] == answered
    assert answer.get("values") == values


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ("Nope!A1", "Unable to parse range: Nope!A1"),
        ("Orders!A1:AA1", "Range (Orders!A1:AA1) exceeds grid limits. Max rows: 1000, max columns: 26"),
        ("Orders!A1001", "exceeds grid limits"),
        ("Orders!", "Unable to parse range"),
        ("'Orders", "Unable to parse range"),
    ],
)
def test_bad_ranges_are_400(url: str, key_file: Path, asked: str, message: str) -> None:
    answer = api(url, "GET", f"/values/{requests.utils.quote(asked, safe='')}", token_for(key_file))
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_unknown_spreadsheet_is_404(url: str, key_file: Path) -> None:
    answer = requests.get(f"{url}/v4/spreadsheets/nope/values/A1", timeout=10,
                          headers={"Authorization": f"Bearer {token_for(key_file)}"})
    assert answer.status_code == 404
    assert answer.json()["error"]["status"] == "NOT_FOUND"


def test_batch_get(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    emulator.reset_counts()
    header, keys_column, empty = worksheet.batch_get(["A1:C1", "A2:A", "E5"])
    assert header == [ORDERS[0]]
    assert keys_column == [["A-1"], ["A-2"], ["A-3"]]
    assert empty == []  # no "values" key at all in the API's answer
    assert emulator.counts == {"values.batchGet": 1}


# -- writes -------------------------------------------------------------------------------------


def test_update_raw_keeps_text_user_entered_makes_formulas(
    emulator: SheetsEmulator, gc: gspread.Client
) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    answer = worksheet.update([["=1+1", "'007"]], "D2")
    assert answer["updatedRange"] == "Orders!D2:E2"
    assert (answer["updatedRows"], answer["updatedColumns"], answer["updatedCells"]) == (1, 2, 2)
    assert emulator.values(KEY, "Orders")[1][3:] == ["=1+1", "'007"]
    worksheet.update([["=1+1", "'007"]], "D3", raw=False)
    assert emulator.values(KEY, "Orders")[2][3:] == [FORMULA_SHOWN, "007"]
    assert emulator.formula(KEY, "Orders", 3, 4) == "=1+1"
    assert emulator.formula(KEY, "Orders", 2, 4) is None
    assert worksheet.get("D3:E3", value_render_option="FORMULA") == [["=1+1", "007"]]
    assert [w["valueInputOption"] for w in emulator.writes] == ["RAW", "USER_ENTERED"]
    assert emulator.writes[0]["range"] == "'Orders'!D2"


def test_update_cannot_spill_out_of_its_range(url: str, key_file: Path) -> None:
    answer = api(url, "PUT", "/values/Orders!A5:B5", token_for(key_file), params={"valueInputOption": "RAW"},
                 json={"values": [["a", "b"], ["c", "d"]]})
    assert answer.status_code == 400
    assert "tried writing to row [6]" in answer.json()["error"]["message"]


def test_value_input_option_is_required(url: str, key_file: Path) -> None:
    answer = api(url, "POST", "/values:batchUpdate", token_for(key_file),
                 json={"data": [{"range": "Orders!C2", "values": [["sent"]]}]})
    assert answer.status_code == 400
    assert "valueInputOption" in answer.json()["error"]["message"]


def test_batch_update_writes_many_ranges_in_one_request(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    emulator.reset_counts()
    answer = worksheet.batch_update([
        {"range": "C2", "values": [["sent 1"]]},
        {"range": "C4", "values": [["failed: no"]]},
        {"range": "A5:B5", "values": [["A-4", "+40740123459"]]},
    ])
    assert emulator.counts == {"values.batchUpdate": 1}
    totals = ("totalUpdatedRows", "totalUpdatedColumns", "totalUpdatedCells")
    assert [answer[name] for name in totals] == [3, 3, 4]
    assert answer["totalUpdatedSheets"] == 1
    assert [r["updatedRange"] for r in answer["responses"]] == ["Orders!C2", "Orders!C4", "Orders!A5:B5"]
    assert [row[2:3] for row in emulator.values(KEY, "Orders")[1:4]] == [["sent 1"], ["sent 2024-01-01"],
                                                                         ["failed: no"]]
    assert emulator.values(KEY, "Orders")[4] == ["A-4", "+40740123459"]
    assert len(emulator.writes) == 3


def test_batch_update_is_all_or_nothing(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    with pytest.raises(gspread.exceptions.APIError) as caught:
        worksheet.batch_update([{"range": "C2", "values": [["sent"]]}, {"range": "AA2", "values": [["x"]]}])
    assert caught.value.code == 400
    assert emulator.values(KEY, "Orders")[1] == ["A-1", "+40740123456"]


def test_tight_grid_must_be_widened_before_writing(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    emulator.add_spreadsheet(KEY, {"Import": [["Order ID", "Phone"], ["A-1", "+40740123456"]]}, grid=(2, 2))
    worksheet = gc.open_by_key(KEY).worksheet("Import")
    with pytest.raises(gspread.exceptions.APIError, match="exceeds grid limits") as caught:
        worksheet.update([["Status"]], "C1")
    assert caught.value.code == 400
    worksheet.add_cols(1)  # updateSheetProperties gridProperties.columnCount
    assert emulator.grid(KEY, "Import") == (2, 3)
    worksheet.spreadsheet.batch_update({"requests": [
        {"appendDimension": {"sheetId": worksheet.id, "dimension": "COLUMNS", "length": 2}},
        {"appendDimension": {"sheetId": worksheet.id, "dimension": "ROWS", "length": 1}},
    ]})
    assert emulator.grid(KEY, "Import") == (3, 5)
    worksheet.update([["Status"]], "C1")
    worksheet.update([["later"]], "E3")
    assert emulator.values(KEY, "Import") == [["Order ID", "Phone", "Status"], ["A-1", "+40740123456"],
                                              ["", "", "", "", "later"]]


def test_insert_and_delete_dimension(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    worksheet.spreadsheet.batch_update({"requests": [
        {"insertDimension": {"range": {"sheetId": worksheet.id, "dimension": "ROWS", "startIndex": 1,
                                       "endIndex": 2}}},
        {"insertDimension": {"range": {"sheetId": worksheet.id, "dimension": "COLUMNS", "startIndex": 0,
                                       "endIndex": 1}}},
        {"deleteDimension": {"range": {"sheetId": worksheet.id, "dimension": "ROWS", "startIndex": 3,
                                       "endIndex": 4}}},
    ]})
    assert emulator.values(KEY, "Orders") == [["", *ORDERS[0]], [], ["", *ORDERS[1][:2]], ["", *ORDERS[3]]]
    assert emulator.grid(KEY, "Orders") == (1000, 27)


def test_unknown_batch_request_changes_nothing(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    spreadsheet = gc.open_by_key(KEY)
    sheet_id = spreadsheet.sheet1.id
    with pytest.raises(gspread.exceptions.APIError, match="Unknown name"):
        spreadsheet.batch_update({"requests": [
            {"appendDimension": {"sheetId": sheet_id, "dimension": "COLUMNS", "length": 1}},
            {"mergeCells": {}},
        ]})
    assert emulator.grid(KEY, "Orders") == (1000, 26)


def test_append_adds_rows_below_the_table(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    emulator.add_spreadsheet(KEY, {"Log": [["when", "what"], ["1", "a"]]}, grid=(2, 2))
    worksheet = gc.open_by_key(KEY).worksheet("Log")
    answer = worksheet.append_rows([["2", "b"], ["3", "c"]])
    assert answer["updates"]["updatedRange"] == "Log!A3:B4"
    assert answer["tableRange"] == "Log!A1:B2"
    assert emulator.values(KEY, "Log")[2:] == [["2", "b"], ["3", "c"]]
    assert emulator.grid(KEY, "Log") == (4, 2)
    assert emulator.counts["values.append"] == 1


# -- people editing, faults, counters -----------------------------------------------------------


def test_hook_edits_between_the_read_and_the_write(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    seen: list[list[list[str]]] = []

    def person_inserts_a_row(emu: SheetsEmulator) -> None:
        seen.append(emu.values(KEY, "Orders"))
        emu.insert_rows(KEY, "Orders", 2, [["A-0", "+40740123450"]])

    emulator.between_read_and_write = person_inserts_a_row
    before = worksheet.get_all_values()
    assert before[1][0] == "A-1"  # the read was answered from the sheet before the edit
    assert emulator.between_read_and_write is None
    assert seen == [[row for row in emulator.values(KEY, "Orders") if row[0] != "A-0"]]
    assert worksheet.col_values(1) == ["Order ID", "A-0", "A-1", "A-2", "A-3"]
    assert len(seen) == 1  # once only
    assert emulator.grid(KEY, "Orders") == (1001, 26)


def test_hook_can_chain_a_second_edit(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")

    def sort_descending(emu: SheetsEmulator) -> None:
        emu.sort_rows(KEY, "Orders", key=lambda row: row[0], reverse=True)
        emu.between_read_and_write = lambda later: later.delete_rows(KEY, "Orders", 2)

    emulator.between_read_and_write = sort_descending
    worksheet.get_all_values()
    assert worksheet.col_values(1) == ["Order ID", "A-3", "A-2", "A-1"]
    assert worksheet.col_values(1) == ["Order ID", "A-2", "A-1"]


def test_429_is_seen_by_a_plain_client(emulator: SheetsEmulator, url: str, key_file: Path) -> None:
    token = token_for(key_file)
    emulator.inject(Fault(status=429, headers={"Retry-After": "1"}))
    answer = api(url, "GET", "/values/Orders", token)
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert api(url, "GET", "/values/Orders", token).status_code == 200
    assert emulator.counts["values.get"] == 2


def test_token_requests_never_take_a_fault(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    emulator.inject(Fault(status=429, headers={"Retry-After": "1"}))
    with pytest.raises(gspread.exceptions.APIError) as caught:
        gc.open_by_key(KEY)  # the token exchange happens first and succeeds
    assert caught.value.code == 429
    assert emulator.counts["token"] == 1
    assert emulator.faults_pending == 0
    assert gc.open_by_key(KEY).title == "Ops"


def test_counters(emulator: SheetsEmulator, gc: gspread.Client) -> None:
    emulator.add_spreadsheet(KEY, {"Big": [[f"K-{i}", f"+4074{i:07d}"] for i in range(10_000)]})
    worksheet = gc.open_by_key(KEY).worksheet("Big")
    assert len(worksheet.get_all_values()) == 10_000
    worksheet.batch_update([{"range": f"C{i}", "values": [["sent"]]} for i in range(1, 10_001)])
    assert emulator.counts["token"] == 1
    assert emulator.counts["metadata"] == 2  # open_by_key, then worksheet()
    assert (emulator.counts["values.get"], emulator.counts["values.batchUpdate"]) == (1, 1)
    emulator.reset_counts()
    worksheet.update_cell(1, 4, "x")
    assert emulator.counts == {"values.update": 1}
    assert emulator.values(KEY, "Big")[9_999] == ["K-9999", "+40740009999", "sent"]


# -- google-auth's Regional Access Boundary lookup ------------------------------------------------
# google-auth 2.62 looks the boundary up by default; 2.63 only when this variable is truthy. These
# tests turn it on, so they exercise the lookup itself whatever the installed default is.

BOUNDARY_LOOKUP = "GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED"


@pytest.fixture
def lookup_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BOUNDARY_LOOKUP, "true")


def test_boundary_lookup_goes_to_google_unless_redirected(key_file: Path, url: str) -> None:
    """Canary: if google-auth renames the hooks, the product's override silently stops working."""
    # The product's `_OfflineCredentials` answers this one; the emulator's credentials the next.
    hook = "_is_regional_access_boundary_lookup_required"
    assert callable(getattr(service_account.Credentials, hook, None)), f"google-auth has no {hook} any more"
    plain = service_account.Credentials.from_service_account_file(str(key_file), scopes=[SCOPE])
    assert plain._build_regional_access_boundary_lookup_url().startswith(
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/"
    )
    local = emulator_credentials(key_file, url)
    assert local._build_regional_access_boundary_lookup_url().startswith(f"{url}/v1/projects/-/")


@pytest.mark.usefixtures("lookup_enabled")
def test_boundary_lookup_reaches_the_emulator_in_the_background(
    emulator: SheetsEmulator, gc: gspread.Client
) -> None:
    worksheet = gc.open_by_key(KEY).worksheet("Orders")
    wait_for(lambda: emulator.counts["allowedLocations"] == 1, "the boundary lookup")
    assert emulator.boundary_lookups == ["connector@test-project.iam.gserviceaccount.com"]
    wait_for(lambda: worksheet.acell("A1").value and emulator.requests[-1]["headers"].get(
        "x-allowed-locations") == "0x0", "the boundary header on later calls")
    assert emulator.counts["allowedLocations"] == 1


@pytest.mark.usefixtures("lookup_enabled")
def test_boundary_lookup_can_make_no_request(emulator: SheetsEmulator, key_file: Path, url: str) -> None:
    client = gspread_client(key_file, url, boundary_lookup=False)
    assert client.open_by_key(KEY).title == "Ops"
    credentials = client.http_client.session.credentials
    # google-auth records the lookup that found nothing by starting its cooldown
    wait_for(lambda: credentials._rab_manager._data.cooldown_expiry is not None, "the empty lookup")
    assert emulator.counts["allowedLocations"] == 0
    assert "x-allowed-locations" not in emulator.requests[-1]["headers"]


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_serves_a_seeded_spreadsheet(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({KEY: {"title": "Ops", "sheets": {"Orders": ORDERS}, "grid": [10, 4]}}))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators.server", "sheets", "--seed", str(seed)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        base = line.split()[-1]
        token = token_for(keys.service_account_file(tmp_path, f"{base}/token"))
        answer = api(base, "GET", "", token).json()
        assert answer["sheets"][0]["properties"]["gridProperties"] == {"rowCount": 10, "columnCount": 4}
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
