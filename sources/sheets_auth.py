"""Who the Sheets source is to Google: the service-account key, credentials that never look up a
"regional access boundary", and a session that sends gspread's requests to `api_url`.

Blocking code, called from `sources.sheets_client` (itself entered through `asyncio.to_thread`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import requests
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from connector.errors import SourceError

GOOGLE_API = "https://sheets.googleapis.com"
SCOPES = ("https://www.googleapis.com/auth/spreadsheets",)


class SheetsError(SourceError):
    """The sheet cannot be read or written now (after retries), or cannot be opened at all."""


class _OfflineCredentials(service_account.Credentials):
    """Service-account credentials without the Regional Access Boundary lookup.

    Before a request google-auth may start a background GET of iamcredentials.googleapis.com's
    allowedLocations (`before_request` -> `_after_refresh` ->
    `_maybe_start_regional_access_boundary_refresh`): by default on 2.62, and on 2.63 and later
    whenever `GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED` is truthy,
    which an operator may set for other Google clients on the same host. Releases without the
    lookup never call this method. pyproject allows all of these (google-auth>=2.40,<3), so the
    override stays: nothing here needs the boundary, the host may have no internet, and against an
    emulator it would leak a request to Google. It is skipped by answering "not required", as
    google-auth does itself for other universes; `_make_copy` keeps this class, so scoped copies
    inherit it. tests/test_google_sheets.py shows no request leaves with the variable set or unset;
    tests/test_sheets_emulator.py fails if google-auth renames the hook.
    """

    def _is_regional_access_boundary_lookup_required(self) -> bool:
        return False


class _RoutedSession(AuthorizedSession):
    """gspread builds URLs on Google's host; send them to `api_url` instead (an emulator in tests)."""

    def __init__(self, credentials: service_account.Credentials, api_url: str) -> None:
        super().__init__(credentials)  # type: ignore[no-untyped-call]
        self._base = api_url.rstrip("/")

    # Only the URL changes; the rest of requests' long signature passes through untouched.
    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if isinstance(url, str) and url.startswith(GOOGLE_API) and self._base != GOOGLE_API:
            url = self._base + url[len(GOOGLE_API) :]
        response: requests.Response = super().request(method, url, *args, **kwargs)  # type: ignore[no-untyped-call]
        return response


_SPREADSHEET_URL = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]+)")


def spreadsheet_key(value: str) -> str:
    """A spreadsheet's key, from the key itself or its URL from the browser (ValueError if neither)."""
    if "/" not in value:
        return value
    match = _SPREADSHEET_URL.search(value)
    if match is None:
        raise ValueError("not a spreadsheet URL: expected .../spreadsheets/d/KEY/...")
    return match.group(1)


def load_credentials(path: Path) -> service_account.Credentials:
    """The service-account key file, or a SheetsError that says what is wrong with it."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SheetsError(f"credentials {path}: cannot be read: {e.strerror or e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SheetsError(f"credentials {path}: not a JSON key file: {e}") from e
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise SheetsError(f'credentials {path}: not a service-account key ("type" must be "service_account")')
    try:
        creds: service_account.Credentials = _OfflineCredentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=list(SCOPES)
        )
    except (ValueError, KeyError, TypeError) as e:
        raise SheetsError(f"credentials {path}: invalid service-account key: {e}") from e
    return creds


def routed_session(credentials: service_account.Credentials, api_url: str) -> AuthorizedSession:
    """An authorised session for gspread whose requests go to `api_url` (Google's by default)."""
    return _RoutedSession(credentials, api_url)
