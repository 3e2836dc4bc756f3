"""`server.token`: who may read what the server of `connector run` knows.

With a token set, every path but `/healthz` and the webhook paths needs `Authorization: Bearer
<token>`: the status page, `/records`, `/events`, `/metrics`, `/openapi.json`, and any path added
later unless it is opened on purpose. `/healthz` says nothing about messages (load balancers ask
it), and webhook senders prove themselves to their source (signature or their own token).

The pages for people also take HTTP Basic with the token as the password and any user name, and
answer a browser that sent nothing with a Basic challenge, so that it asks for it. The token is
compared in constant time and never logged: it is one of the config's secrets, which every log
line is scrubbed of, and a refusal logs only the path.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Collection

import structlog
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from connector.web import error

log = structlog.get_logger(__name__)

BASIC_CHALLENGE = 'Basic realm="connector", charset="UTF-8"'
BEARER_CHALLENGE = 'Bearer realm="connector"'
REFUSED_PAGE = (
    "<!doctype html><title>Token needed</title><meta name=viewport content='width=device-width'>"
    "<p>This connector's status page needs its token (<code>server.token</code>): give it as the "
    "password, with any user name.</p>"
)


class TokenGate:
    """ASGI middleware: requests without the token never reach the app, except on `open_paths`."""

    def __init__(
        self, app: ASGIApp, token: str, open_paths: Collection[str], is_page: Callable[[str], bool]
    ) -> None:
        self.app = app
        self._token = token.encode("utf-8")
        self.open_paths = frozenset(open_paths)
        self.is_page = is_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        page = self.is_page(scope["path"])
        given = _header(scope, b"authorization")
        if given is not None and self._accepts(given, basic=page):
            await self.app(scope, receive, send)
            return
        if given is not None:  # someone tried: worth a line (the path only; never what was sent)
            log.warning("request refused: wrong server token", path=scope["path"])
        await _refusal(page, tried=given is not None)(scope, receive, send)

    def _accepts(self, header: bytes, *, basic: bool) -> bool:
        scheme, _, value = header.strip().partition(b" ")
        scheme = scheme.lower()
        if scheme == b"bearer":
            return hmac.compare_digest(value.strip(), self._token)
        if scheme == b"basic" and basic:
            try:
                decoded = base64.b64decode(value.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            _, colon, password = decoded.partition(b":")
            return bool(colon) and hmac.compare_digest(password, self._token)
        return False


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _refusal(page: bool, *, tried: bool) -> Response:
    if page:
        return HTMLResponse(REFUSED_PAGE, 401, headers={"www-authenticate": BASIC_CHALLENGE})
    detail = "wrong token" if tried else "this server needs its token: Authorization: Bearer <token>"
    return error(401, "unauthorized", detail, {"www-authenticate": BEARER_CHALLENGE})
