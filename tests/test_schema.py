"""`connector schema [--tests]`: the JSON Schema editors check config.yaml and the rule tests with.

The shipped schema files are what the command prints (they never go stale), every config the
product ships or documents validates against it as written (`${VAR}` and all), and a wrong key or
value does not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from connector.config_loader import load_config
from connector.schema import config_schema, render, rule_tests_schema
from tests.helpers import ROOT, connector
from tests.test_config import SPEC_EXAMPLE
from tests.test_policy_config import SPEC_POLICIES

MODELINE = "# yaml-language-server: $schema="


class _EditorLoader(yaml.SafeLoader):
    """YAML as an editor's YAML 1.2 reads it: a date-time is text, not a timestamp object."""


_EditorLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(text: str) -> Any:
    return yaml.load(text, Loader=_EditorLoader)


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(schema: dict[str, Any], data: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(schema).iter_errors(data)
    ]


@pytest.mark.parametrize(
    ("shipped", "args"), [("config.schema.json", ()), ("config.test.schema.json", ("--tests",))]
)
def test_the_shipped_schema_is_what_connector_schema_prints(shipped: str, args: tuple[str, ...]) -> None:
    done = connector("schema", *args, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (ROOT / shipped).read_text() == done.stdout, (
        f"{shipped} is stale: run `connector schema {' '.join(args)} > {shipped}`"
    )


def test_schema_needs_no_config_file(tmp_path: Path) -> None:
    done = connector("schema", "-c", "nowhere.yaml", cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["title"] == "config.yaml of the SMS connector"


def test_the_default_config_and_the_example_test_file_name_their_schema() -> None:
    assert (ROOT / "config.yaml").read_text().startswith(MODELINE + "config.schema.json\n")
    assert (ROOT / "config.test.yaml").read_text().startswith(MODELINE + "config.test.schema.json\n")
    for example in (ROOT / "examples").glob("*.yaml"):
        if _is_config(load(example.read_text())):
            assert example.read_text().startswith(MODELINE + "../config"), example


def _is_config(data: Any) -> bool:
    """A connector config, not another tool's YAML (examples/compose.yaml is Docker Compose's)."""
    return isinstance(data, dict) and not {"services", "cases"} & set(data) and bool(data)


def _documented_configs() -> list[tuple[str, str]]:
    found = [("config.yaml", (ROOT / "config.yaml").read_text())]
    found += [
        (f"examples/{p.name}", p.read_text())
        for p in sorted((ROOT / "examples").glob("*.yaml"))
        if _is_config(load(p.read_text()))
    ]
    found += [
        (f"README.md yaml block {i}", block) for i, block in _readme_blocks() if _is_config(load(block))
    ]
    return [*found, ("SPEC example", SPEC_EXAMPLE), ("SPEC policies", SPEC_POLICIES)]


def _readme_blocks() -> list[tuple[int, str]]:
    return list(enumerate(re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)))


@pytest.mark.parametrize(("name", "text"), _documented_configs(), ids=lambda v: v if "\n" not in v else "")
def test_every_shipped_and_documented_config_validates_as_written(name: str, text: str) -> None:
    data = load(text)
    assert _is_config(data), name
    assert problems(config_schema(), data) == [], name


def test_the_examples_include_a_config(tmp_path: Path) -> None:
    configs = [name for name, _ in _documented_configs() if name.startswith("examples/")]
    assert configs == ["examples/reminders.yaml"]


def test_placeholders_validate_where_a_value_is_not_text_and_load_as_their_default(tmp_path: Path) -> None:
    text = """\
server: {host: 0.0.0.0, port: "${PORT:-8080}"}
log: {format: "${LOG_FORMAT:-json}", level: info}
shutdown_grace: "${GRACE:-10s}"
sinks:
  ro: {type: robo_sms_ro, token: "${TOKEN}", concurrency: "${CONCURRENCY:-8}",
       retry_ambiguous: "${RETRY:-false}", daily_budget: "${BUDGET:-500}", rate: "${RATE:-10/s}"}
"""
    assert problems(config_schema(), load(text)) == []
    (tmp_path / "config.yaml").write_text(text)
    config = load_config(tmp_path / "config.yaml", {"TOKEN": "t"}).config
    assert (config.server.port, config.log.format, config.shutdown_grace) == (8080, "json", 10.0)
    ro = config.sinks["ro"]
    assert (ro.daily_budget, getattr(ro, "concurrency", None)) == (500, 8)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["sinks"]["outbox"].update(pth="x.jsonl"), "sinks.outbox"),  # a typo'd key
        (lambda d: d.update(shutdown_grace="10 seconds"), "shutdown_grace"),  # not a duration
        (lambda d: d["server"].update(port="eighty"), "server.port"),  # not a number
        (lambda d: d["rules"][0].update(dedupe="7d"), "rules.0"),
        (lambda d: d["rules"][0].update(max_per_recipient="often"), "rules.0.max_per_recipient"),
        (lambda d: d["rules"][0].pop("message"), "rules.0"),
        (lambda d: d["log"].update(level="loud"), "log.level"),
        (lambda d: d["sources"]["inbox"].update(type="csv_folders"), "sources.inbox"),
        (lambda d: d.update(timezones="UTC"), ""),
    ],
)
def test_a_wrong_config_fails_validation_where_it_is_wrong(change: Any, where: str) -> None:
    data = load((ROOT / "config.yaml").read_text())
    change(data)
    found = problems(config_schema(), data)
    assert found, "the schema let it through"
    assert any(problem.startswith(f"{where}: ") for problem in found), found


def test_every_key_has_a_description_and_every_optional_one_its_default() -> None:
    schema = config_schema()
    missing = []
    for name, model in [("", schema), *schema["$defs"].items()]:
        required = set(model.get("required", []))
        for key, field in model.get("properties", {}).items():
            if "description" not in field:
                missing.append(f"{name}.{key}: description")
            if key not in required and key != "type" and "default" not in field and name != "":
                missing.append(f"{name}.{key}: default")
    assert missing == []
    durations = schema["$defs"]["CsvFolderConfig"]["properties"]["settle"]
    assert durations["default"] == "2s"
    assert schema["$defs"]["RuleConfig"]["properties"]["dedupe_window"]["default"] == "7d"
    assert "from" in schema["$defs"]["SendWindow"]["properties"]


def test_the_test_file_schema_validates_the_shipped_test_files_and_refuses_a_typo() -> None:
    schema = rule_tests_schema()
    shipped = [ROOT / "config.test.yaml", *sorted((ROOT / "examples").glob("*.test.yaml"))]
    for path in shipped:
        assert problems(schema, load(path.read_text())) == [], path
    documented = [block for _, block in _readme_blocks() if "cases" in load(block)]
    assert documented, "README shows a rule test"
    for block in documented:
        assert problems(schema, load(block)) == [], block
    wrong = {"cases": [{"name": "x", "rows": {}, "expect": [{"too": "+40740123456"}]}]}
    found = problems(schema, wrong)
    assert any(p.startswith("cases.0: ") and "'rows'" in p for p in found), found
    assert any(p.startswith("cases.0.expect.0: ") and "'too'" in p for p in found), found
    assert "${" not in render(schema)  # the test files have no ${VAR}s
