"""The status page and `server.token`, over real HTTP: a `connector run` runtime serving on loopback
(the browser's view of the page is tests/test_page_browser.py)."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from connector.config_loader import load_config
from connector.errors import ConfigError
from connector.page import routes
from tests.helpers import connector, env, free_port, wait_for
from tests.webhook_support import HOOK_TOKEN, OUTBOX, Served, config_text, encode, order, serve

PAGE_TOKEN = "page-token-0123456789abcdef"
JSON = {"content-type": "application/json"}
LANDLINE = {"order": "W-x", "name": "Ion", "phone": "021 315 1234"}  # fails before it is sent


def guarded(text: str, token: str = PAGE_TOKEN) -> str:
    """The config with `server.token` set."""
    return re.sub(r"(server: \{host: [^,]+, port: \d+)\}", lambda m: f"{m.group(1)}, token: {token}}}", text)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    budgeted = OUTBOX.replace("path: outbox.jsonl}", "path: outbox.jsonl, daily_budget: 100}")
    async with serve(tmp_path, config_text(budgeted)) as running:
        yield running


@pytest.fixture
async def locked(tmp_path: Path) -> AsyncIterator[Served]:
    async with serve(tmp_path, guarded(config_text(OUTBOX))) as running:
        yield running


async def deliver(served: Served, *rows: dict[str, str]) -> list[str]:
    """One delivery to the open webhook; the event ids, once every send has settled."""
    answer = await served.post("/hooks/open", encode({"orders": list(rows)}), JSON)
    assert answer.status_code == 202, answer.text
    await served.runtime.engine.drain()
    return [event["id"] for event in answer.json()["events"]]


def cell(html: str, state: str, row: str = 'id="count-total"') -> int:
    """A count of the table of counts (the total row unless told)."""
    found = re.search(re.escape(row) + r".*?data-state=\"" + state + r"\">(\d+)<", html, re.S)
    assert found is not None, f"no {state} count in {row}"
    return int(found.group(1))


def problem_ids(html: str) -> list[str]:
    return re.findall(r'<tr class="problem" data-id="([0-9a-f]+)"', html)


# -- the page ---------------------------------------------------------------------------------------


async def test_the_page_shows_sources_sinks_counts_and_the_latest_failures(served: Served) -> None:
    sent_one, sent_two, failed = await deliver(served, order(1), order(2), LANDLINE)
    refused = await served.post("/hooks/bearer", encode(order(3)), JSON)  # no token: refused
    assert refused.status_code == 401

    page = await served.client.get(served.url + "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    for name in ("signed", "bearer", "open"):
        assert f'data-source="{name}"' in html
    assert "took 3 record(s), delivery sha256-" in html  # the open source's last activity
    assert "refused a delivery: " in html  # the bearer source's last error
    assert 'data-sink="outbox"' in html and '<span class="active">active</span>' in html
    assert "2 of 100 messages" in html  # today's spend against daily_budget
    assert (cell(html, "sent"), cell(html, "failed"), cell(html, "pending")) == (2, 1, 0)
    assert cell(html, "sent", 'data-source="open" data-rule="notify"') == 2
    assert "Counts as of " in html
    assert problem_ids(html) == [failed]
    assert f'href="records/{failed}"' in html
    assert "&#39;*** *** *234&#39; is a fixed-line number" in html
    assert "315 1234" not in html  # the number is masked wherever it shows
    assert sent_one not in html and sent_two not in html
    assert served.runtime.ledger.instance_id in html  # the instance and its holds
    assert "job:sweeper" in html


async def test_a_paused_sink_says_why(served: Served) -> None:
    served.runtime.sinks["outbox"].pause("no credits left")
    html = (await served.client.get(served.url + "/")).text
    assert '<span class="paused">paused</span>: no credits left' in html


async def test_the_search_finds_an_id_a_source_a_rule_or_the_last_digits(served: Served) -> None:
    first, second = await deliver(served, LANDLINE, {**LANDLINE, "order": "W-y", "phone": "021 316 7788"})
    bearer = await served.post(
        "/hooks/bearer",
        encode({"order": "W-z", "name": "Z", "phone": "0299 999 999"}),
        {**JSON, "authorization": f"Bearer {HOOK_TOKEN}"},
    )
    [third] = [e["id"] for e in bearer.json()["events"]]
    await served.runtime.engine.drain()

    async def found(search: str) -> list[str]:
        page = await served.client.get(served.url + "/", params={"q": search})
        assert page.status_code == 200
        return problem_ids(page.text)

    assert set(await found("")) == {first, second, third}
    assert await found("bearer") == [third]  # a source
    assert set(await found("noti")) == {first, second, third}  # a rule's first letters
    assert await found("7788") == [second]  # the last digits of the number
    assert await found(second[:5]) == [second]  # the start of an id
    assert await found("nothing-like-it") == []
    by_id = (await served.client.get(served.url + "/", params={"q": first[:10]})).text
    assert '<tr class="by-id"><td><span class="state state-failed">' in by_id  # any state, by id


async def test_the_failures_are_paged_newest_first(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "PAGE_ROWS", 2)
    ids = []
    for i in range(5):  # one delivery each: five distinct times, newest last
        ids += await deliver(served, {**LANDLINE, "order": f"W-{i}", "phone": f"021 315 12{i}0"})
    seen: list[str] = []
    url = served.url + "/"
    while True:
        html = (await served.client.get(url)).text
        seen += problem_ids(html)
        older = re.search(r'<a id="older" href="\?([^"]+)"', html)
        if older is None:
            break
        url = served.url + "/?" + older.group(1).replace("&amp;", "&")
    assert seen == ids[::-1]


async def test_a_record_shows_its_history_and_an_unknown_id_is_404(served: Served) -> None:
    sent, failed = await deliver(served, order(7), LANDLINE)
    page = await served.client.get(f"{served.url}/records/{failed}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert f'id="event-id">{failed}<' in html
    assert 'id="state">failed<' in html
    assert "Hi Ion, order W-x is on its way." in html  # the text
    assert "&#39;*** *** *234&#39; is a fixed-line number" in html and "315 1234" not in html
    assert re.findall(r'<span class="state state-(\w+)"', html) == ["failed", "claimed", "failed"]

    sent_page = (await served.client.get(f"{served.url}/records/{sent}")).text
    assert '<code id="to">+********007</code>' in sent_page  # masked: the last three digits show
    assert "747000007" not in sent_page
    assert re.findall(r'<span class="state state-(\w+)"', sent_page) == ["sent", "claimed", "sent"]

    for missing in ("0" * 32, "x" * 300):
        answer = await served.client.get(f"{served.url}/records/{missing}")
        assert answer.status_code == 404
        assert "No event with this id" in answer.text


# -- server.token -----------------------------------------------------------------------------------


def basic(password: str, user: str = "ops") -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


BEARER = {"authorization": f"Bearer {PAGE_TOKEN}"}


async def test_with_a_token_every_route_but_health_and_webhooks_needs_it(locked: Served) -> None:
    delivered = await locked.post("/hooks/open", encode({"orders": [order(1)]}), JSON)
    [event] = [e["id"] for e in delivered.json()["events"]]
    pages = ["/", f"/records/{event}"]
    api = [f"/events/{event}", "/metrics", "/openapi.json"]

    async def get(path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await locked.client.get(locked.url + path, headers=headers)

    for path in pages:
        asked = await get(path)  # a browser without credentials: asked for them
        assert asked.status_code == 401
        assert asked.headers["www-authenticate"].startswith('Basic realm="connector"')
        assert asked.headers["content-type"].startswith("text/html")
        assert (await get(path, BEARER)).status_code == 200
        assert (await get(path, basic(PAGE_TOKEN))).status_code == 200
        assert (await get(path, basic(PAGE_TOKEN, user=""))).status_code == 200  # any user name
        for wrong in (
            basic("not-the-token"),
            basic(PAGE_TOKEN[:-1]),
            {"authorization": "Basic !!!not base64"},
            {"authorization": "Basic " + base64.b64encode(PAGE_TOKEN.encode()).decode()},  # no colon
            {"authorization": f"Bearer {PAGE_TOKEN}x"},
            {"authorization": PAGE_TOKEN},
        ):
            assert (await get(path, wrong)).status_code == 401, wrong
    for path in api:
        refused = await get(path)
        assert refused.status_code == 401
        assert refused.json() == {
            "error": "unauthorized",
            "detail": "this server needs its token: Authorization: Bearer <token>",
        }
        assert refused.headers["www-authenticate"].startswith("Bearer")
        wrong = await get(path, {"authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "unauthorized", "detail": "wrong token"}
        assert (await get(path, basic(PAGE_TOKEN))).status_code == 401  # Basic is for the pages only
        assert (await get(path, {"authorization": f"bearer {PAGE_TOKEN}"})).status_code == 200
    assert (await get("/no-such-path")).status_code == 401  # a path nobody opened is guarded too
    assert (await get("/no-such-path", BEARER)).status_code == 404

    assert (await get("/healthz")).status_code == 200
    assert (await locked.post("/hooks/open", encode({"orders": [order(2)]}), JSON)).status_code == 202
    own = {**JSON, "authorization": f"Bearer {HOOK_TOKEN}"}  # a webhook's own token, not the server's
    assert (await locked.post("/hooks/bearer", encode(order(3)), own)).status_code == 202


async def test_without_a_token_nothing_asks_for_one(served: Served) -> None:
    for path in ("/", "/metrics", "/openapi.json", "/healthz"):
        assert (await served.client.get(served.url + path)).status_code == 200


async def test_the_openapi_document_declares_the_token(locked: Served, served: Served) -> None:
    document = (await locked.client.get(locked.url + "/openapi.json", headers=BEARER)).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["serverToken"] == {**schemes["serverToken"], "type": "http", "scheme": "bearer"}
    assert schemes["serverBasic"]["scheme"] == "basic"
    paths = document["paths"]
    for path in ("/events/{id}", "/metrics"):
        assert paths[path]["get"]["security"] == [{"serverToken": []}]
        assert "401" in paths[path]["get"]["responses"]
    for path in ("/", "/records/{id}"):
        assert paths[path]["get"]["security"] == [{"serverToken": []}, {"serverBasic": []}]
    assert paths["/healthz"]["get"]["security"] == []
    assert paths["/hooks/signed"]["post"]["security"] == [{"standardWebhooks": []}]
    assert paths["/hooks/open"]["post"]["security"] == []

    plain = (await served.client.get(served.url + "/openapi.json")).json()
    assert "serverToken" not in plain["components"].get("securitySchemes", {})
    assert "security" not in plain["paths"]["/metrics"]["get"]


def test_check_warns_of_a_reachable_server_without_a_token(tmp_path: Path) -> None:
    def warnings(server: str) -> list[str]:
        (tmp_path / "config.yaml").write_text(f"server: {server}\n")
        return [str(w) for w in load_config(tmp_path / "config.yaml", environ={}).warnings]

    [open_to_all] = warnings("{host: 0.0.0.0}")
    assert "config.yaml:1 server.host: listens on 0.0.0.0 without `server.token`" in open_to_all
    for loopback in ("{host: 127.0.0.1}", "{host: localhost}", "{host: '::1'}", "{host: 127.0.0.2}", "{}"):
        assert warnings(loopback) == [], loopback
    assert warnings(f"{{host: 0.0.0.0, token: {PAGE_TOKEN}}}") == []
    [short] = warnings("{host: 0.0.0.0, token: abc}")
    assert "server.token: is 3 characters long: use 16 or more" in short
    with pytest.raises(ConfigError, match=r"server\.token"):
        warnings("{token: ''}")

    (tmp_path / "config.yaml").write_text("server: {host: 0.0.0.0}\n")
    checked = connector("check", "--offline", "-c", "config.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    warned = r"^warning: .*config.yaml:1 server.host: listens on 0.0.0.0 without"
    assert re.search(warned, checked.stdout, re.M)


@pytest.mark.slow
def test_the_token_is_never_logged(tmp_path: Path) -> None:
    port = free_port()
    text = guarded(config_text(OUTBOX, port=port), '"${CONNECTOR_TOKEN}"')  # from the environment
    (tmp_path / "config.yaml").write_text(text.replace("level: info", "level: debug"))
    log = tmp_path / "connector.log"
    environ = {**env(), "CONNECTOR_TOKEN": PAGE_TOKEN}
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "connector", "run", "-c", "config.yaml"],
            cwd=tmp_path, env=environ, stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(url), 30, "the server")
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/metrics").status_code == 401
            near = {"authorization": f"Bearer {PAGE_TOKEN[:-2]}"}
            assert client.get("/metrics", headers=near).status_code == 401
            assert client.get("/", headers=basic(PAGE_TOKEN + "x")).status_code == 401
            # Pasted into a path, the token reaches the log line of a refusal: redacted there.
            assert client.get(f"/{PAGE_TOKEN}", headers={"authorization": "Bearer x"}).status_code == 401
            assert client.get("/metrics", headers=BEARER).status_code == 200
            assert client.get("/", headers=basic(PAGE_TOKEN)).status_code == 200
            assert client.get("/openapi.json", headers=BEARER).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    text = log.read_text()
    assert text.count("request refused: wrong server token") == 3  # a request with none: not logged
    assert '"path": "/***"' in text
    assert PAGE_TOKEN not in text and PAGE_TOKEN[:-2] not in text


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
