"""config.yaml loading: the SPEC example, located problems, interpolation, units, warnings."""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import pytest

from connector.config import unresolved_names
from connector.config_loader import LoadedConfig, default_config_path, load_config
from connector.errors import ConfigError
from connector.units import Rate, parse_duration, parse_rate
from sinks.robo_sms_ro import RoboSmsRoConfig
from sources.csv_folder import CsvFolderConfig
from sources.google_sheets import GoogleSheetsConfig
from sources.webhook import WebhookConfig

# The example of SPEC.md, as published.
SPEC_EXAMPLE = """\
state: sqlite:///connector.db          # ledger; postgresql://... for several instances
server: {host: 127.0.0.1, port: 8080}  # webhook server
log: {format: console, level: info}    # format: console | json

sinks:
  ro:
    type: robo_sms_ro
    token: ${ROBO_SMS_TOKEN}
    url: https://robo-sms.com/api/sms/  # default
    device_id: null                     # optional
    rate: 10/s                          # optional ceiling
    concurrency: 8                      # requests in flight at once
    retry_ambiguous: false              # see "Providers" below
  pk:
    type: robo_sms_pk
    email: ops@example.com
    key: ${ROBOSMS_PK_KEY}
    mask: SMS-ALERT
    url: https://portal.robosms.pk/api  # default; send-message and check-balance live under it
    encoding: json                      # json | form
    bulk: true                          # same text to many numbers -> one request with multiple=1
  outbox:
    type: dry_run                       # renders and records, sends nothing
    path: outbox.jsonl                  # optional

sources:
  orders:
    type: google_sheets
    spreadsheet: 1AbC...                # key or full URL
    worksheet: Orders                   # default: first worksheet
    credentials: service-account.json   # default: $GOOGLE_APPLICATION_CREDENTIALS
    every: 60s                          # or cron: "*/5 * * * *"
    key_column: Order ID                # optional; identity of a row
    status_column: SMS Status           # default; added to the header row if missing
    api_url: https://sheets.googleapis.com   # default; point at a Sheets API emulator in tests
  erp:
    type: csv_folder
    path: ./inbox
    pattern: "*.csv"
    settle: 2s                          # unchanged this long before it is taken
    key_column: null
    status_column: SMS Status
  shop:
    type: webhook
    path: /hooks/shop
    secret: ${SHOP_WEBHOOK_SECRET}      # Standard Webhooks (whsec_...) signature check
    # token: ${SHOP_TOKEN}              # or a bearer token; one of the two unless auth: none
    items: orders                       # optional: each element of body.orders is one record

rules:
  - name: order-confirmed
    source: orders                      # a name or a list of names
    when: "row['Status'] == 'Confirmed'"   # optional expression; default true
    to: "{{ row['Phone'] }}"
    country: RO                         # region for numbers written without a prefix
    message: "Hi {{ row['Name'] }}, order {{ row['Order ID'] }} is confirmed."
    sink: ro
    dedupe_window: 7d                   # same recipient + text from this rule is not sent again within it
"""

SPEC_ENV = {
    "ROBO_SMS_TOKEN": "ro-token-0123456789",
    "ROBOSMS_PK_KEY": "pk-key-9876543210",
    "SHOP_WEBHOOK_SECRET": "whsec_c2VjcmV0LXNlY3JldA==",
}

# A small valid config that the error cases below change; line numbers matter in them.
#  1 sinks:          6 type: csv_folder    11 to: ...
#  2   out:          7 path: inbox         12 message: hi
#  3     type: ...   8 rules:              13 sink: out
#  4 sources:        9 - name: r
#  5   erp:         10   source: erp
BASE = """\
sinks:
  out:
    type: dry_run
sources:
  erp:
    type: csv_folder
    path: inbox
rules:
  - name: r
    source: erp
    to: "{{ row['Phone'] }}"
    message: hi
    sink: out
"""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Run from the config's folder so problems read `config.yaml:N`, as a user passing `-c config.yaml` sees.
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, text: str, name: str = "config.yaml") -> Path:
    (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return Path(name)


def problems(folder: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    path = write(folder, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return [str(p) for p in caught.value.problems]


def load(folder: Path, text: str, environ: dict[str, str] | None = None) -> LoadedConfig:
    return load_config(write(folder, text), environ or {})


# ---- the SPEC example ------------------------------------------------------------------------------


def test_spec_example_validates(folder: Path) -> None:
    loaded = load(folder, SPEC_EXAMPLE, SPEC_ENV)
    config = loaded.config

    ro = config.sinks["ro"]
    assert isinstance(ro, RoboSmsRoConfig)
    assert ro.token.get_secret_value() == SPEC_ENV["ROBO_SMS_TOKEN"]
    assert ro.rate is not None
    assert ro.rate.per_second == 10
    assert sorted(config.secrets()) == sorted(SPEC_ENV.values())
    orders = config.sources["orders"]
    assert isinstance(orders, GoogleSheetsConfig)
    assert orders.every == 60
    assert orders.key_column == "Order ID"
    erp = config.sources["erp"]
    assert isinstance(erp, CsvFolderConfig)
    assert erp.settle == 2
    shop = config.sources["shop"]
    assert isinstance(shop, WebhookConfig)
    assert shop.items == "orders"
    [rule] = config.rules
    assert (rule.sources, rule.sink, rule.country) == (["orders"], "ro", "RO")
    assert rule.dedupe_window == 7 * 86400
    assert loaded.warnings == []
    assert loaded.path == folder / "config.yaml"
    assert loaded.base_dir == folder


def test_spec_example_without_its_variables_names_each_one(folder: Path) -> None:
    assert problems(folder, SPEC_EXAMPLE) == [
        "config.yaml:8 sinks.ro.token: environment variable ROBO_SMS_TOKEN is not set",
        "config.yaml:17 sinks.pk.key: environment variable ROBOSMS_PK_KEY is not set",
        "config.yaml:46 sources.shop.secret: environment variable SHOP_WEBHOOK_SECRET is not set",
    ]


# ---- located problems, one kind per row ------------------------------------------------------------

ERROR_CASES: list[tuple[str, str, list[str]]] = [
    (
        "missing field: the line of its parent key",
        """\
        sinks:
          ro:
            type: robo_sms_ro
        """,
        ["config.yaml:2 sinks.ro.token: field required"],
    ),
    (
        "unknown key with a suggestion",
        """\
        sinks:
          ro:
            type: robo_sms_ro
            token: abc
            devce_id: x
        """,
        ["config.yaml:5 sinks.ro.devce_id: unknown key (did you mean 'device_id'?)"],
    ),
    (
        "unknown key with nothing close lists the allowed ones",
        "server: {host: localhost, colour: blue}\n",
        ["config.yaml:1 server.colour: unknown key (allowed: host, port, token)"],
    ),
    (
        "unknown top-level key",
        "sink: {}\n",
        ["config.yaml:1 sink: unknown key (did you mean 'sinks'?)"],
    ),
    (
        "unknown type lists the types",
        """\
        sinks:
          ro:
            type: robo_sms
        """,
        [
            "config.yaml:3 sinks.ro.type: unknown type 'robo_sms' (did you mean 'robo_sms_ro'? "
            "known types: dry_run, robo_sms_pk, robo_sms_ro)"
        ],
    ),
    (
        "unknown source type",
        """\
        sources:
          s:
            type: ftp
        """,
        [
            "config.yaml:3 sources.s.type: unknown type 'ftp' "
            "(known types: csv_folder, google_sheets, webhook)"
        ],
    ),
    (
        "missing type",
        """\
        sinks:
          out:
            path: o.jsonl
        """,
        ["config.yaml:2 sinks.out.type: field required (known types: dry_run, robo_sms_pk, robo_sms_ro)"],
    ),
    (
        "a sink that is not a mapping",
        "sinks:\n  out: dry_run\n",
        ["config.yaml:2 sinks.out: expected a mapping of settings (key: value lines)"],
    ),
    (
        "bad duration",
        """\
        sources:
          erp:
            type: csv_folder
            path: inbox
            settle: 2 minutes
        """,
        [
            "config.yaml:5 sources.erp.settle: "
            "'2 minutes' is not a duration: write it as 500ms, 2s, 5m, 1h or 7d"
        ],
    ),
    (
        "bad rate",
        """\
        sinks:
          ro:
            type: robo_sms_ro
            token: abc
            rate: 10
        """,
        ["config.yaml:5 sinks.ro.rate: expected a rate with its period, such as 10/s, 600/m or 5/2s"],
    ),
    (
        "number out of range",
        "server:\n  port: 70000\n",
        ["config.yaml:2 server.port: input should be less than or equal to 65535"],
    ),
    (
        "choice outside its list",
        "log:\n  format: xml\n",
        ["config.yaml:2 log.format: input should be 'console' or 'json'"],
    ),
    (
        "a source name of the wrong shape",
        BASE.replace("    source: erp", "    source: {erp: 1}"),
        ["config.yaml:10 rules.0.source: input should be a valid string (or a list of them)"],
    ),
    (
        "a list of sources with a wrong item",
        BASE.replace("    source: erp", "    source: [erp, [x]]"),
        ["config.yaml:10 rules.0.source.1: input should be a valid string"],
    ),
    (
        "model-level check on a source",
        """\
        sources:
          shop:
            type: webhook
            path: /hooks/shop
        """,
        ["config.yaml:2 sources.shop: set exactly one of `secret`, `token` or `auth: none`"],
    ),
    (
        "rule naming a missing source",
        BASE.replace("    source: erp", "    source: erpp"),
        ["config.yaml:10 rules.0.source: no source named 'erpp' (did you mean 'erp'? sources: erp)"],
    ),
    (
        "rule naming a missing source in a list",
        BASE.replace("    source: erp", "    source: [erp, shop]"),
        ["config.yaml:10 rules.0.source.1: no source named 'shop' (sources: erp)"],
    ),
    (
        "rule naming a missing sink",
        BASE.replace("    sink: out", "    sink: ro"),
        ["config.yaml:13 rules.0.sink: no sink named 'ro' (sinks: out)"],
    ),
    (
        "duplicate rule names",
        BASE + "  - {name: r, source: erp, to: x, message: y, sink: out}\n",
        ["config.yaml:14 rules.1.name: a rule named 'r' already exists (rules.0)"],
    ),
    (
        "duplicate YAML key",
        BASE.replace("    path: inbox\n", "    path: inbox\n    path: outbox\n"),
        ["config.yaml:8 sources.erp.path: duplicate key (first at line 7)"],
    ),
    (
        "template syntax error in message",
        BASE.replace("    message: hi", "    message: \"Hi {{ row['Name'] }\""),
        ["config.yaml:12 rules.0.message: template syntax error: unexpected '}'"],
    ),
    (
        "template syntax error in to",
        BASE.replace("    to: \"{{ row['Phone'] }}\"", '    to: "{{ }}"'),
        [
            "config.yaml:11 rules.0.to: template syntax error: "
            "expected an expression, got 'end of print statement'"
        ],
    ),
    (
        "expression syntax error in when",
        BASE.replace("    message: hi", "    message: hi\n    when: row['Status'] =="),
        ["config.yaml:13 rules.0.when: template syntax error: unexpected 'end of template'"],
    ),
    (
        "unknown name in a template",
        BASE.replace("    to: \"{{ row['Phone'] }}\"", '    to: "{{ Phone }}"'),
        ["config.yaml:11 rules.0.to: unknown name 'Phone' (the record is row, e.g. row['Phone'])"],
    ),
    (
        "unknown filter in a template",
        BASE.replace("    message: hi", "    message: \"{{ row['Name'] | shout }}\""),
        ["config.yaml:12 rules.0.message: template syntax error: no filter named 'shout'."],
    ),
    (
        "unknown name beside another error elsewhere",
        BASE.replace("    path: inbox", "    path: inbox\n    settle: soon").replace(
            "message: hi", "message: '{{ Name }}'"
        ),
        [
            "config.yaml:8 sources.erp.settle: 'soon' is not a duration: write it as 500ms, 2s, 5m, 1h or 7d",
            "config.yaml:13 rules.0.message: unknown name 'Name' (the record is row, e.g. row['Name'])",
        ],
    ),
    (
        "template syntax error on a later line of a block text",
        BASE.replace("    message: hi", "    message: |\n      Hi,\n      {% if %}"),
        [
            "config.yaml:12 rules.0.message: template syntax error: "
            "expected an expression, got 'end of statement block' (line 2 of the template)"
        ],
    ),
    (
        "unset variable",
        """\
        sinks:
          ro:
            type: robo_sms_ro
            token: ${ROBO_SMS_TOKEN}
        """,
        ["config.yaml:4 sinks.ro.token: environment variable ROBO_SMS_TOKEN is not set"],
    ),
    (
        "unset variable is reported once, not again as a bad number",
        "server:\n  port: ${PORT}\n",
        ["config.yaml:2 server.port: environment variable PORT is not set"],
    ),
    (
        "unclosed reference",
        "state: ${STATE\n",
        ["config.yaml:1 state: `${` is not closed (write $${ for a literal ${)"],
    ),
    (
        "not a variable name",
        "state: ${1STATE}\n",
        ["config.yaml:1 state: ${1STATE} is not a reference like ${NAME} or ${NAME:-default}"],
    ),
    (
        "YAML syntax error",
        "sinks:\n  out:\n    type: dry_run\n   path: [\n",
        [
            "config.yaml:4: invalid YAML: while parsing a block mapping (line 2): "
            "expected <block end>, but found '<block mapping start>'"
        ],
    ),
    (
        "YAML tab indentation",
        "sinks:\n\tout: {}\n",
        [
            "config.yaml:2: invalid YAML: while scanning for the next token: "
            "found character '\\t' that cannot start any token"
        ],
    ),
    (
        "two documents",
        "state: a\n---\nstate: b\n",
        [
            "config.yaml:2: invalid YAML: expected a single document in the stream (line 1): "
            "but found another document"
        ],
    ),
    ("empty file", "", ["config.yaml: config file is empty"]),
    ("only comments", "# nothing yet\n", ["config.yaml: config file is empty"]),
    (
        "top level is a list",
        "- sinks\n- rules\n",
        ["config.yaml:1: the top level must be a mapping of settings (state:, sinks:, sources:, rules:)"],
    ),
    (
        "top level is a word",
        "sinks\n",
        ["config.yaml:1: the top level must be a mapping of settings (state:, sinks:, sources:, rules:)"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_each_problem_is_located(folder: Path, text: str, expected: list[str]) -> None:
    assert problems(folder, text) == expected


def test_every_problem_is_reported_at_once(folder: Path) -> None:
    text = """\
    server: {port: http}
    sinks:
      ro:
        type: robo_sms_ro
        tokne: abc
      out:
        type: dry_run
    sources:
      erp:
        type: csv_folder
        path: inbox
        settle: soon
    rules:
      - name: a
        source: [erp, crm]
        to: "{{ row['Phone'] }"
        message: hi
        sink: sms
      - name: a
        source: erp
        to: x
        message: "{{ row[ }}"
        sink: out
        dedupe: 1d
    """
    assert problems(folder, text) == [
        "config.yaml:1 server.port: input should be a valid integer, unable to parse string as an integer",
        "config.yaml:3 sinks.ro.token: field required",
        "config.yaml:5 sinks.ro.tokne: unknown key (did you mean 'token'?)",
        "config.yaml:12 sources.erp.settle: 'soon' is not a duration: write it as 500ms, 2s, 5m, 1h or 7d",
        "config.yaml:15 rules.0.source.1: no source named 'crm' (sources: erp)",
        "config.yaml:16 rules.0.to: template syntax error: unexpected '}'",
        "config.yaml:18 rules.0.sink: no sink named 'sms' (sinks: out, ro)",
        "config.yaml:19 rules.1.name: a rule named 'a' already exists (rules.0)",
        "config.yaml:22 rules.1.message: template syntax error: unexpected '}', expected ']'",
        "config.yaml:24 rules.1.dedupe: unknown key (did you mean 'dedupe_window'?)",
    ]


def test_problems_name_the_file_as_given(folder: Path) -> None:
    (folder / "conf").mkdir()
    write(folder, "log: {level: loud}\n", "conf/sms.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(Path("conf/sms.yaml"), {})
    assert str(caught.value) == (
        "conf/sms.yaml:1 log.level: input should be 'debug', 'info', 'warning' or 'error'"
    )


# ---- files that cannot be read -----------------------------------------------------------------


def test_missing_file(folder: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("nowhere.yaml"), {})
    assert [str(p) for p in caught.value.problems] == [
        "nowhere.yaml: config file does not exist "
        "(give another with `connector -c PATH` or $CONNECTOR_CONFIG)"
    ]


def test_folder_instead_of_file(folder: Path) -> None:
    (folder / "conf").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(Path("conf"), {})
    assert (
        str(caught.value) == "conf: is a folder, not a config file (give the file with `connector -c PATH`)"
    )


def test_not_utf8(folder: Path) -> None:
    (folder / "config.yaml").write_bytes(b"state: a\nlog: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config(Path("config.yaml"), {})
    assert str(caught.value) == "config.yaml:2: is not UTF-8 text"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(folder: Path) -> None:
    path = write(folder, BASE)
    path.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert str(caught.value) == "config.yaml: cannot read the config file: permission denied"


# ---- ${VAR} interpolation --------------------------------------------------------------------------

INTERPOLATION_CASES: list[tuple[str, str, dict[str, str], str]] = [
    ("variable", "${DB}", {"DB": "sqlite:///a.db"}, "sqlite:///a.db"),
    ("inside text", "sqlite:///${NAME}.db", {"NAME": "prod"}, "sqlite:///prod.db"),
    ("two variables", "${A}-${B}", {"A": "x", "B": "y"}, "x-y"),
    ("default when unset", "${DB:-sqlite:///d.db}", {}, "sqlite:///d.db"),
    ("default when empty", "${DB:-sqlite:///d.db}", {"DB": ""}, "sqlite:///d.db"),
    ("set value wins over default", "${DB:-sqlite:///d.db}", {"DB": "sqlite:///e.db"}, "sqlite:///e.db"),
    ("empty default", "x${DB:-}y", {}, "xy"),
    ("empty without default stays empty", "x${DB}y", {"DB": ""}, "xy"),
    ("escaped", "$${DB}", {"DB": "no"}, "${DB}"),
    ("escaped beside a real one", "$${A}:${A}", {"A": "1"}, "${A}:1"),
    ("a lone dollar is text", "cost $5", {}, "cost $5"),
    ("no braces is text", "$DB", {"DB": "no"}, "$DB"),
]


@pytest.mark.parametrize(
    ("written", "environ", "expected"),
    [c[1:] for c in INTERPOLATION_CASES],
    ids=[c[0] for c in INTERPOLATION_CASES],
)
def test_interpolation(folder: Path, written: str, environ: dict[str, str], expected: str) -> None:
    assert load(folder, f"state: '{written}'\n", environ).config.state == expected


def test_interpolated_text_reaches_typed_fields(folder: Path) -> None:
    loaded = load(folder, "server: {port: '${PORT:-8081}'}\nlog: {level: '${LEVEL}'}\n", {"LEVEL": "debug"})
    assert loaded.config.server.port == 8081
    assert loaded.config.log.level == "debug"


def test_keys_and_comments_are_not_interpolated(folder: Path) -> None:
    loaded = load(folder, "sinks:\n  ${NAME}:  # ${NOT_SET}\n    type: dry_run\n", {"NAME": "x"})
    assert list(loaded.config.sinks) == ["${NAME}"]


def test_dotenv_beside_the_config(folder: Path) -> None:
    (folder / "conf").mkdir()
    (folder / "conf" / ".env").write_text(
        "STATE_DB=sqlite:///from-dotenv.db\nLEVEL=warning\n", encoding="utf-8"
    )
    (folder / ".env").write_text("LEVEL=error\n", encoding="utf-8")  # the working folder's .env is not read
    write(folder, "state: ${STATE_DB}\nlog: {level: '${LEVEL}'}\n", "conf/config.yaml")
    loaded = load_config(Path("conf/config.yaml"), {})
    assert loaded.config.state == "sqlite:///from-dotenv.db"
    assert loaded.config.log.level == "warning"
    assert loaded.base_dir == folder / "conf"


def test_environment_wins_over_dotenv(folder: Path) -> None:
    (folder / ".env").write_text("STATE_DB=sqlite:///from-dotenv.db\n", encoding="utf-8")
    loaded = load(folder, "state: ${STATE_DB}\n", {"STATE_DB": "sqlite:///from-env.db"})
    assert loaded.config.state == "sqlite:///from-env.db"


def test_process_environment_is_read_and_left_alone(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_TEST_STATE", "sqlite:///process.db")
    monkeypatch.delenv("CONNECTOR_TEST_ONLY_IN_DOTENV", raising=False)
    (folder / ".env").write_text("CONNECTOR_TEST_ONLY_IN_DOTENV=x\n", encoding="utf-8")
    path = write(
        folder, "state: ${CONNECTOR_TEST_STATE}\nserver: {host: '${CONNECTOR_TEST_ONLY_IN_DOTENV}'}\n"
    )
    loaded = load_config(path)
    assert loaded.config.state == "sqlite:///process.db"
    assert loaded.config.server.host == "x"
    assert "CONNECTOR_TEST_ONLY_IN_DOTENV" not in os.environ


# ---- secrets stay out of error text ------------------------------------------------------------


def test_secrets_never_appear_in_problems(folder: Path) -> None:
    environ = {
        "RO_RATE": "s3cr3t-rate-value",
        "SINK_NAME": "s3cr3t-sink-name",
        "REGION": "s3cr3t-region",
        "TOKEN": "s3cr3t-token-value",
    }
    text = """\
    sinks:
      ro:
        type: robo_sms_ro
        token: ${TOKEN}
        rate: ${RO_RATE}
    sources:
      erp: {type: csv_folder, path: inbox}
    rules:
      - name: r
        source: erp
        to: x
        message: y
        sink: ${SINK_NAME}
        country: ${REGION}
    """
    path = write(folder, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ)
    shown = str(caught.value)
    for secret in environ.values():
        assert secret not in shown
    assert shown.splitlines() == [
        "config.yaml:5 sinks.ro.rate: '${RO_RATE}' is not a rate: write it as 10/s, 600/m or 5/2s",
        "config.yaml:13 rules.0.sink: no sink named '${SINK_NAME}' (sinks: ro)",
        "config.yaml:14 rules.0.country: "
        "'${REGION}' is not a country code that phone numbers know (use RO, PK, ...)",
    ]


# ---- warnings ----------------------------------------------------------------------------------


def test_webhook_without_auth_is_a_warning(folder: Path) -> None:
    loaded = load(folder, "sources:\n  shop:\n    type: webhook\n    path: /hooks/shop\n    auth: none\n")
    assert [str(w) for w in loaded.warnings] == [
        "config.yaml:5 sources.shop.auth: "
        "accepts unauthenticated requests: anyone who can reach /hooks/shop can send SMS"
    ]


def test_webhook_with_a_secret_has_no_warning(folder: Path) -> None:
    loaded = load(folder, "sources:\n  shop: {type: webhook, path: /hooks/shop, secret: whsec_abc}\n")
    assert loaded.warnings == []


# ---- YAML details ------------------------------------------------------------------------------


def test_merge_keys_and_anchors(folder: Path) -> None:
    text = """\
    sinks:
      a: &ro {type: robo_sms_ro, token: t, concurrency: 2}
      b:
        <<: *ro
        concurrency: 4
    """
    sinks = load(folder, text).config.sinks
    assert isinstance(sinks["b"], RoboSmsRoConfig)
    assert (sinks["a"].concurrency, sinks["b"].concurrency) == (2, 4)


def test_numbers_are_taken_as_text_where_text_is_expected(folder: Path) -> None:
    sink = load(folder, "sinks:\n  ro: {type: robo_sms_ro, token: 12345, device_id: 42}\n").config.sinks["ro"]
    assert isinstance(sink, RoboSmsRoConfig)
    assert (sink.token.get_secret_value(), sink.device_id) == ("12345", "42")


# ---- default path ------------------------------------------------------------------------------

PATH_CASES: list[tuple[str | None, dict[str, str], Path]] = [
    ("given.yaml", {"CONNECTOR_CONFIG": "env.yaml"}, Path("given.yaml")),
    (None, {"CONNECTOR_CONFIG": "/etc/connector/env.yaml"}, Path("/etc/connector/env.yaml")),
    (None, {"CONNECTOR_CONFIG": ""}, Path("config.yaml")),
    (None, {}, Path("config.yaml")),
]


@pytest.mark.parametrize(("cli", "environ", "expected"), PATH_CASES)
def test_default_config_path(cli: str | None, environ: dict[str, str], expected: Path) -> None:
    assert default_config_path(cli, environ) == expected


def test_default_config_path_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_CONFIG", "from-env.yaml")
    assert default_config_path(None) == Path("from-env.yaml")


# ---- units -------------------------------------------------------------------------------------

DURATIONS: list[tuple[object, float]] = [
    ("500ms", 0.5),
    ("2s", 2.0),
    ("5m", 300.0),
    ("1h", 3600.0),
    ("7d", 604800.0),
    ("1.5s", 1.5),
    (" 2s ", 2.0),
    ("0s", 0.0),
    (3, 3.0),
    (0.25, 0.25),
]


@pytest.mark.parametrize(("written", "seconds"), DURATIONS)
def test_parse_duration(written: object, seconds: float) -> None:
    assert parse_duration(written) == seconds


@pytest.mark.parametrize(
    "written", ["2x", "2", "-1s", "", "1w", "s", True, None, [1], -1, math.inf, math.nan]
)
def test_parse_duration_refuses(written: object) -> None:
    # ValueError (not TypeError) for every bad input: only ValueError becomes a located problem.
    with pytest.raises(ValueError, match="duration"):
        parse_duration(written)


RATES: list[tuple[str, Rate, float]] = [
    ("10/s", Rate(10, 1), 10.0),
    ("600/m", Rate(600, 60), 10.0),
    ("5/2s", Rate(5, 2), 2.5),
    ("1/500ms", Rate(1, 0.5), 2.0),
    ("3600 / h", Rate(3600, 3600), 1.0),
]


@pytest.mark.parametrize(("written", "rate", "per_second"), RATES)
def test_parse_rate(written: str, rate: Rate, per_second: float) -> None:
    assert parse_rate(written) == rate
    assert parse_rate(written).per_second == per_second
    assert parse_rate(str(rate)) == rate


@pytest.mark.parametrize("written", ["10", "10/", "/s", "0/s", "10/0s", "ten/s", 10, None])
def test_parse_rate_refuses(written: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(written)


def test_rate_reads_as_written() -> None:
    assert (str(Rate(10, 1)), str(Rate(5, 2))) == ("10/s", "5/2s")


def test_units_in_config(folder: Path) -> None:
    text = """\
    sinks:
      ro: {type: robo_sms_ro, token: t, rate: 600/m, timeout: 500ms, max_retry_time: 5m}
    sources:
      erp: {type: csv_folder, path: inbox, settle: 2s, rescan: 1h}
    rules:
      - {name: r, source: erp, to: x, message: y, sink: ro, dedupe_window: 7d}
    """
    config = load(folder, text).config
    ro, erp = config.sinks["ro"], config.sources["erp"]
    assert isinstance(ro, RoboSmsRoConfig)
    assert isinstance(erp, CsvFolderConfig)
    assert ro.rate == Rate(600, 60)
    assert (ro.timeout, ro.max_retry_time) == (0.5, 300.0)
    assert (erp.settle, erp.rescan) == (2.0, 3600.0)
    assert config.rules[0].dedupe_window == 604800.0


# ---- the one cross-reference check, on models and raw data ------------------------------------------


def test_unresolved_names_are_refused_with_nothing_else_wrong(folder: Path) -> None:
    text = """\
    sinks:
      out: {type: dry_run}
    rules:
      - {name: r, source: erp, to: x, message: y, sink: ro}
    """
    assert problems(folder, text) == [
        "config.yaml:4 rules.0.source: no source named 'erp' (sources: none defined)",
        "config.yaml:4 rules.0.sink: no sink named 'ro' (sinks: out)",
    ]


def test_unresolved_names_passes_over_malformed_data() -> None:
    rules = ["text", {"name": 3, "source": [None, "a", 7]}, {"name": "3", "source": [], "sink": "s"}]
    assert unresolved_names(rules, ["a"], ["s"]) == [
        (("rules", 1, "source", 2), "no source named '7' (sources: a)"),
        (("rules", 2, "name"), "a rule named '3' already exists (rules.1)"),
        (("rules", 2, "source"), "name at least one source"),
    ]
    assert unresolved_names({"not": "a list"}, [], []) == []


def test_yaml_errors_do_not_quote_the_line(folder: Path) -> None:
    # PyYAML's own text quotes the offending line, which may hold a token pasted into the file.
    found = problems(folder, "sinks:\n  ro: {type: robo_sms_ro, token: pasted-s3cr3t-token\n")
    assert len(found) == 1
    assert found[0].startswith("config.yaml:3: invalid YAML: ")
    assert "pasted-s3cr3t-token" not in found[0]
