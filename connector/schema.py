"""`connector schema [--tests]`: the JSON Schema of config.yaml, or of the rule-test files, made
from the pydantic models that validate them, for editors: VS Code's YAML extension
(redhat.vscode-yaml) reads it through the `# yaml-language-server: $schema=config.schema.json`
line at the top of config.yaml, and completes, describes and checks every key as it is typed.

It describes the file as written, before `${VAR}` references are replaced: wherever a value is
not text anyway (numbers, booleans, durations, choices), a `${VAR}` or `${VAR:-default}` is
accepted too. The loader stays the judge: it also checks what a schema cannot say (rules naming a
missing sink, templates that do not compile, a lease shorter than 1s).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from connector.config import ConnectorConfig
from connector.rule_test_file import RuleTestFile
from connector.types import PLACEHOLDER

DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema, saying what config.yaml accepts as a person writes it."""

    placeholders = True  # config.yaml's `${VAR}`s; the rule-test files have none

    def int_schema(self, schema: core_schema.IntSchema) -> JsonSchemaValue:
        return self._or_placeholder(super().int_schema(schema))

    def float_schema(self, schema: core_schema.FloatSchema) -> JsonSchemaValue:
        return self._or_placeholder(super().float_schema(schema))

    def bool_schema(self, schema: core_schema.BoolSchema) -> JsonSchemaValue:
        return self._or_placeholder(super().bool_schema(schema))

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        found = super().literal_schema(schema)
        # A choice (`format: console | json`) may come from the environment; a `type:` may not.
        return found if "const" in found else self._or_placeholder(found)

    def _or_placeholder(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        return {"anyOf": [schema, PLACEHOLDER]} if self.placeholders else schema

    def str_schema(self, schema: core_schema.StringSchema) -> JsonSchemaValue:
        found = super().str_schema(schema)
        if self._config.coerce_numbers_to_str:  # `worksheet: 2024` is the text 2024 (types.STRICT)
            found["type"] = ["string", "number"]
        return found

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        found = super().default_schema(schema)
        # A default as the file would write it (`2s`, `7d`), not as the model holds it (2.0).
        serialize = _plain_serializer(schema["schema"])
        default = found.get("default")
        if serialize is not None and default is not None and "default" in schema:
            found["default"] = self.encode_default(serialize(schema["default"]))
        return found


class _TestsGenerator(_Generator):
    placeholders = False


def _plain_serializer(schema: Any) -> Callable[[Any], Any] | None:
    while isinstance(schema, dict):
        found = schema.get("serialization")
        if isinstance(found, dict) and found.get("type") == "function-plain" and not found.get("info_arg"):
            function: Callable[[Any], Any] = found["function"]
            return function
        schema = schema.get("schema")
    return None


def json_schema(
    model: type[BaseModel], title: str, description: str, generator: type[_Generator] = _Generator
) -> dict[str, Any]:
    found = {"$schema": DIALECT, **model.model_json_schema(schema_generator=generator)}
    found.update(title=title, description=description)
    if generator.placeholders:
        found = _shared(found)
        found.setdefault("$defs", {})["Placeholder"] = PLACEHOLDER
    return found


def _shared(schema: Any) -> Any:
    """The `${VAR}` schema, written once in `$defs` and referred to everywhere else."""
    if schema == PLACEHOLDER:
        return {"$ref": "#/$defs/Placeholder"}
    if isinstance(schema, dict):
        return {key: _shared(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_shared(value) for value in schema]
    return schema


def config_schema() -> dict[str, Any]:
    return json_schema(
        ConnectorConfig,
        "config.yaml of the SMS connector",
        "Sources, sinks and rules; `connector check` validates a file, `connector schema` prints this.",
    )


def rule_tests_schema() -> dict[str, Any]:
    return json_schema(
        RuleTestFile,
        "Rule tests of the SMS connector (*.test.yaml)",
        "Rows in, expected messages out; `connector test` runs them.",
        _TestsGenerator,
    )


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def print_schema(*, tests: bool) -> int:
    print(render(rule_tests_schema() if tests else config_schema()), end="")
    return 0
