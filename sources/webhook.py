"""Webhook source: each authenticated POST becomes records, claimed in the ledger before the 202.

The HTTP side (reading the body within `max_body`, routing) lives in `connector.server`; this
module decides what a delivery means: who may send it (`sources.webhook_auth`), whether it was
answered before, which records it holds, and the answer.

A delivery is identified by its `webhook-id` header, or else by a sha256 of its raw body (bearer
token senders retry with the same body). The answer to each delivery is kept in the ledger's notes
before it is given, so a repeated delivery gets the very same answer and sends nothing; a
deliberate second event must therefore carry a new `webhook-id` or a different body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Self

import structlog
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from connector.events import Event, Record
from connector.types import STRICT, left_as_written
from connector.web import HttpRoute
from sources.base import Accept, DeliveryNote, Source, SourceConfigBase, SourceContext
from sources.webhook_auth import Check, Refused, open_check, signature_check, token_check
from sources.webhook_body import (
    MAX_ITEMS,
    BadDelivery,
    Reply,
    delivery_id,
    parse_body,
    require_json,
)
from sources.webhook_http import operation, route

log = structlog.get_logger(__name__)

RESERVED_PATHS = ("/healthz", "/metrics", "/events", "/openapi.json", "/records", "/")


class WebhookConfig(SourceConfigBase):
    """HTTP POSTs from other systems (shop, CRM), served by `connector run`."""

    model_config = STRICT
    type: Literal["webhook"] = Field(description="JSON posted to a path of the server.")
    path: str = Field(description="The path it is served on, e.g. /hooks/shop.")
    secret: SecretStr | list[SecretStr] | None = Field(
        default=None,
        description="Standard Webhooks secret (whsec_...), or a list of them during a rotation.",
    )
    token: SecretStr | None = Field(default=None, description="Or a bearer token the caller sends.")
    auth: Literal["none"] | None = Field(
        default=None, description="none: accept unauthenticated requests (check warns about it)."
    )
    items: str | None = Field(
        default=None,
        description="Each element of this list in the body is one record; default: the body is one.",
    )
    max_body: int = Field(default=1024 * 1024, description="Largest body accepted, in bytes (else 413).")
    key_column: str | None = Field(default=None, description="A field that identifies a record.")
    status_column: str = Field(  # accepted for symmetry with the other sources; unused here
        default="SMS Status", description="Unused: accepted as for the other sources."
    )

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        given = [n for n, v in (("secret", self.secret), ("token", self.token), ("auth", self.auth)) if v]
        if len(given) != 1:
            raise ValueError("set exactly one of `secret`, `token` or `auth: none`")
        if not self.path.startswith("/"):
            raise ValueError("`path` must start with /")
        if any(self.path == p or self.path.startswith(p + "/") for p in RESERVED_PATHS):
            raise ValueError(f"`path` {self.path} is taken by the server ({', '.join(RESERVED_PATHS)})")
        if self.max_body < 1:
            raise ValueError("`max_body` must be at least 1 byte")
        return self

    @field_validator("secret")
    @classmethod
    def _usable_secret(
        cls, value: SecretStr | list[SecretStr] | None, info: ValidationInfo
    ) -> SecretStr | list[SecretStr] | None:
        # A field error (sources.x.secret), so an unset ${VAR} there is reported once, by name.
        for secret in value if isinstance(value, list) else [value] if value else []:
            if left_as_written(secret.get_secret_value(), info):
                continue
            try:
                signature_check([secret.get_secret_value()])
            except Exception:  # noqa: BLE001 - the package raises several types for a bad secret
                raise ValueError("must be a Standard Webhooks secret: whsec_ then base64") from None
        return value

    def signing_secrets(self) -> list[str]:
        values = self.secret if isinstance(self.secret, list) else [self.secret] if self.secret else []
        return [v.get_secret_value() for v in values]

    def secrets(self) -> list[str]:
        found = self.signing_secrets()
        if self.token:
            found.append(self.token.get_secret_value())
        return found

    def check(self) -> Check:
        if self.secret is not None:
            return signature_check(self.signing_secrets())
        if self.token is not None:
            return token_check(self.token.get_secret_value())
        return open_check

    def describe_auth(self) -> str:
        if self.secret is not None:
            return f"Standard Webhooks signature ({len(self.signing_secrets())} secret(s))"
        return "bearer token" if self.token is not None else "NO authentication (auth: none)"


class WebhookSource(Source):
    config_model = WebhookConfig

    def __init__(self, name: str, config: WebhookConfig, ctx: SourceContext) -> None:
        super().__init__(name, config, ctx)
        self._check = config.check()

    @property
    def path(self) -> str:
        return str(self.config.path)

    async def run(self) -> None:
        # The server takes the deliveries; the source only lives as long as the run.
        await self.ctx.stopping.wait()

    async def once(self) -> None:
        """Webhooks are served by `connector run` only: a pass has nothing to take."""

    def preview(self) -> Iterator[Record]:
        return iter(())

    async def check(self, *, online: bool = True) -> str:  # local either way
        return f"POST {self.path}, {self.config.describe_auth()}"

    def routes(self) -> list[HttpRoute]:
        config = self.config
        scheme = (
            "signature" if config.secret is not None else "bearer" if config.token is not None else "none"
        )
        spec = operation(
            self.name,
            auth=config.describe_auth(),
            scheme=scheme,
            items=config.items,
            max_body=config.max_body,
        )

        async def deliver(headers: Mapping[str, str], body: bytes) -> Reply:
            if self.ctx.accept is None:
                raise RuntimeError("webhooks are taken by `connector run` only")
            return await self.deliver(headers, body, self.ctx.accept)

        return [route(self.name, self.path, config.max_body, self.ctx, deliver, spec)]

    async def deliver(self, headers: Mapping[str, str], body: bytes, accept: Accept) -> Reply:
        """One delivery, start to answer. `headers` keys are lower case. Never raises for input."""
        try:
            self._check(headers, body)
        except Refused as exc:
            log.warning("webhook refused", source=self.name, status=exc.status, reason=exc.reason)
            self.activity.failed(f"refused a delivery: {exc.reason}")
            error = "unauthorized" if exc.status == 401 else "bad_request"
            headers_out = {"www-authenticate": "Bearer"} if self.config.token is not None else {}
            return Reply(exc.status, {"error": error, "detail": exc.reason}, headers=headers_out)
        scope = f"webhook:{self.name}"
        try:
            delivery = delivery_id(headers, body)
        except BadDelivery as exc:
            return self._rejected(exc)
        try:
            require_json(headers)
            records = self.records(delivery, parse_body(body))
        except BadDelivery as exc:
            # A delivery answered before keeps its first answer, whatever this copy holds. Looked
            # up here only: the claim below finds a repeat itself, in the same transaction, so the
            # 202's path makes one trip to the ledger, not two.
            stored = await self.ctx.notes.get_note(scope, delivery)
            return self._rejected(exc) if stored is None else self._replayed(delivery, stored)

        def answer(events: list[list[Event]]) -> dict[str, Any]:
            listed = [
                {"id": e.id, "record": index, "rule": e.rule, "state": e.state, "reason": e.reason}
                for index, per_record in enumerate(events)
                for e in per_record
            ]
            return {"delivery": delivery, "records": len(records), "events": listed}

        made: list[dict[str, Any]] = []

        def note(events: list[list[Event]]) -> str:
            # Kept with the claims, before it is given: a retry gets this answer, not a second send.
            made.append(answer(events))
            return json.dumps({"status": 202, "body": made[-1]})

        accepted = await accept(records, DeliveryNote(scope, delivery, note))
        if accepted.replayed:  # a retry, or another instance took this delivery first
            return self._replayed(delivery, accepted.answer)
        log.info("webhook accepted", source=self.name, delivery=delivery, records=len(records))
        self.activity.did(f"took {len(records)} record(s), delivery {delivery}")
        return Reply(202, made[-1], len(records))

    def _rejected(self, exc: BadDelivery) -> Reply:
        log.info("webhook rejected", source=self.name, error=exc.answer.body["error"], detail=str(exc))
        return exc.answer

    def _replayed(self, delivery: str, stored: str) -> Reply:
        first = json.loads(stored)
        log.info("repeated delivery answered from the first", source=self.name, delivery=delivery)
        return Reply(int(first["status"]), first["body"], replayed=True)

    def records(self, delivery: str, payload: dict[str, Any]) -> list[Record]:
        rows: list[dict[str, Any]]
        items = self.config.items
        if items is None:
            rows = [payload]
        else:
            listed = payload.get(items)
            if listed is None:
                raise BadDelivery(422, "missing_items", f"the body has no {items!r} field")
            if not isinstance(listed, list):
                raise BadDelivery(422, "invalid_items", f"{items!r} must be a list of objects")
            if len(listed) > MAX_ITEMS:
                raise BadDelivery(413, "too_many_items", f"{len(listed)} items, at most {MAX_ITEMS} allowed")
            bad = next((i for i, row in enumerate(listed) if not isinstance(row, dict)), None)
            if bad is not None:
                raise BadDelivery(422, "invalid_items", f"{items}[{bad}] is not an object")
            rows = listed
        return [
            Record(
                source=self.name,
                row=row,
                origin=f"{delivery}:{index}",
                key=self._key(row),
                where=f"delivery {delivery} item {index}",
            )
            for index, row in enumerate(rows)
        ]

    def _key(self, row: Mapping[str, Any]) -> str | None:
        # A row without the key column falls back to the message fingerprint, like the other sources.
        column = self.config.key_column
        value = row.get(column) if column else None
        if value is None or value == "":
            return None
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
