"""Who may post to a webhook source: Standard Webhooks signatures, a bearer token, or nobody checks.

Every check answers None (let it in) or raises `Refused`, whose `status` is 401 for a failed
check and 400 for a request too malformed to check (a body that is not UTF-8). The reason is for
the log and the caller: it never contains the secret, the token or the signature sent.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")

Check = Callable[[Mapping[str, str], bytes], None]
"""(lower-cased headers, raw body) -> None, or raises Refused."""


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signature_check(secrets: Sequence[str]) -> Check:
    """Standard Webhooks: any of `secrets` (several while one is rotated out) may have signed it."""
    verifiers = [Webhook(secret) for secret in secrets]

    def check(headers: Mapping[str, str], body: bytes) -> None:
        missing = [name for name in SIGNATURE_HEADERS if not headers.get(name)]
        if missing:
            raise Refused(401, f"missing header(s): {', '.join(missing)}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(400, "the body is not UTF-8 text") from None
        signed = {name: headers[name] for name in SIGNATURE_HEADERS}
        reason = "no signature matches"
        for verifier in verifiers:
            # The one boundary around the verifier: besides its own error it lets ValueError (a
            # signature with no comma, bad base64) and, on odd input, TypeError or OverflowError
            # escape. All of them mean "this request does not prove who sent it": 401, not 500.
            try:
                verifier.verify(text, signed, json_parse=False)
            except WebhookVerificationError as exc:
                reason = str(exc) or reason
            except (ValueError, TypeError, OverflowError):
                reason = "malformed webhook-signature header"
            else:
                return
        raise Refused(401, reason)

    return check


def token_check(token: str) -> Check:
    """`Authorization: Bearer <token>`, compared in constant time."""
    expected = token.encode("utf-8")

    def check(headers: Mapping[str, str], body: bytes) -> None:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Refused(401, "missing bearer token")
        # Header values arrive as latin-1 text; back to bytes so compare_digest takes any of them.
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), expected):
            raise Refused(401, "wrong bearer token")

    return check


def open_check(headers: Mapping[str, str], body: bytes) -> None:
    """`auth: none`, written explicitly in config.yaml (and warned about by `connector check`)."""
