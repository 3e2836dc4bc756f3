"""Reads config.yaml into a ConnectorConfig, or raises ConfigError naming every problem at once.

The file goes YAML -> nodes (which keep the line of every key) -> plain data -> `${VAR}`
interpolation -> pydantic. Each problem is located as `file:line key.path: message`: pydantic's
error locations are walked back through the data to the nearest YAML key that exists. The rule
cross-references and the templates are checked on the data too, so they are reported even when
pydantic stops at field errors elsewhere; with a valid file, the rules are compiled here, once.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from dotenv import dotenv_values
from pydantic import BaseModel, ValidationError

from connector.config import ConnectorConfig, KeyPath, keypath, unresolved_names
from connector.config_errors import located
from connector.errors import ConfigError, ConfigProblem, lower_first
from connector.redact import Redactor
from connector.rules import CompiledRule, RuleSyntaxError, compile_rule, text_problems
from connector.types import UNSET_AS_WRITTEN
from sources.webhook import WebhookConfig

M = TypeVar("M", bound=BaseModel)

CONFIG_ENV = "CONNECTOR_CONFIG"
MIN_TOKEN_CHARS = 16  # server.token: shorter ones are worth guessing
DEFAULT_CONFIG = "config.yaml"


@dataclass(frozen=True)
class LoadedConfig:
    config: ConnectorConfig
    path: Path  # the config file, absolute
    base_dir: Path  # its folder: relative paths in the config resolve against it
    warnings: list[ConfigProblem]  # legal but risky settings, located like errors
    rules: tuple[CompiledRule, ...] = ()  # compiled once, when the file is loaded


def default_config_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> Path:
    """`-c PATH` if given, else `$CONNECTOR_CONFIG`, else `./config.yaml`."""
    env = os.environ if environ is None else environ
    return Path(cli_value or env.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(
    path: Path, environ: Mapping[str, str] | None = None, *, unset_as_written: bool = False
) -> LoadedConfig:
    """Validate the file; `environ` (default: the process environment) wins over a `.env` beside it.

    `unset_as_written`: a `${VAR}` that is not set stays as written instead of being an error
    (`connector test` needs no credentials; a number or duration must still resolve)."""
    data, doc = read_yaml(path)
    if data is None:
        raise ConfigError(doc.sorted_problems())
    doc.unset_as_written = unset_as_written
    env = _environment(path.parent, os.environ if environ is None else environ, doc)
    data = _interpolate(data, (), env, doc)
    config = _validate(data, doc)
    _check_names(data, doc)
    rules = _compile_rules(config, data, doc)
    if config is None or doc.problems:
        raise ConfigError(doc.sorted_problems())
    file = path.absolute()
    return LoadedConfig(
        config=config, path=file, base_dir=file.parent, warnings=_warnings(config, doc), rules=tuple(rules)
    )


@dataclass
class _Document:
    """One YAML file being loaded: where each key sits, and what is wrong with it."""

    file: str
    lines: dict[KeyPath, int] = field(default_factory=dict)  # line of the key (or list item) per path
    scalars: dict[KeyPath, str] = field(default_factory=dict)  # each plain value's text as written
    problems: list[ConfigProblem] = field(default_factory=list)
    substituted: dict[KeyPath, list[tuple[str, str]]] = field(default_factory=dict)  # (value, `${NAME}`)
    unresolved: set[KeyPath] = field(default_factory=set)  # a ${VAR} failed here: other errors only echo it
    unset_as_written: bool = False  # an unset ${VAR} stays as written (see load_config)

    def line(self, path: KeyPath) -> int | None:
        """Line of the deepest key along `path` that the file has (a missing key: its parent's)."""
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    def problem(self, path: KeyPath, message: str) -> ConfigProblem:
        return ConfigProblem(self.file, self.line(path), keypath(path), self._scrub(path, message))

    def add(self, path: KeyPath, message: str, line: int | None = None) -> None:
        if any(path[: len(p)] == p for p in self.unresolved):
            return
        problem = self.problem(path, message)
        self.problems.append(
            problem if line is None else ConfigProblem(self.file, line, problem.path, problem.message)
        )

    def sorted_problems(self) -> list[ConfigProblem]:
        unique = list(dict.fromkeys(self.problems))
        return sorted(unique, key=lambda p: p.line or 0)

    def _scrub(self, path: KeyPath, message: str) -> str:
        # Values that came from the environment may be secrets: show them as written in the file.
        # Short values only near their own key, or an ordinary word would be rewritten elsewhere.
        shown_as = {
            value: written
            for where, pairs in self.substituted.items()
            for value, written in pairs
            if len(value) >= 8 or where[: len(path)] == path or path[: len(where)] == where
        }
        return Redactor(shown_as=shown_as).text(message) if shown_as else message


YamlDocument = _Document
"""What `read_yaml` answers beside the data: lines, texts as written, problems (`add`)."""

_CONFIG_TOP = "the top level must be a mapping of settings (state:, sinks:, sources:, rules:)"


# ---- reading and parsing ---------------------------------------------------------------------


def read_yaml(
    path: Path, *, what: str = "config file", top_level: str = _CONFIG_TOP
) -> tuple[Any, YamlDocument]:
    """A YAML file as plain data, with every key's line and every plain value's text noted in the
    document, which also gathers the problems; the data is None when nothing further can be
    checked. ConfigError when the file cannot be read at all. The config and the rule-test files
    (connector/rule_test_file.py) are read with it."""
    doc = _Document(str(path))
    text = _read(path, doc.file, what)
    return _parse(text, doc, what, top_level), doc


def validate_located(model: type[M], data: Any, doc: YamlDocument) -> M | None:
    """`data` as `model`, or None with each pydantic error added to `doc` at its key's line."""
    try:
        return model.model_validate(data, context={UNSET_AS_WRITTEN: doc.unset_as_written})
    except ValidationError as exc:
        for path, message in located(exc.errors(include_url=False), data, model):
            doc.add(path, message)
        return None


def _read(path: Path, file: str, what: str = "config file") -> str:
    def fail(message: str, line: int | None = None) -> ConfigError:
        return ConfigError([ConfigProblem(file, line, "", message)])

    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        if what != "config file":
            raise fail(f"{what} does not exist") from exc
        hint = f"give another with `connector -c PATH` or ${CONFIG_ENV}"
        raise fail(f"config file does not exist ({hint})") from exc
    except IsADirectoryError as exc:
        raise fail(f"is a folder, not a {what} (give the file with `connector -c PATH`)") from exc
    except OSError as exc:
        raise fail(f"cannot read the {what}: {lower_first(exc.strerror or str(exc))}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail("is not UTF-8 text", raw[: exc.start].count(b"\n") + 1) from exc


def _parse(text: str, doc: _Document, what: str = "config file", top_level: str = _CONFIG_TOP) -> Any:
    """Plain data with every key's line recorded in `doc`; None when nothing further can be checked."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            doc.problems.append(ConfigProblem(doc.file, None, "", f"{what} is empty"))
            return None
        if not isinstance(root, yaml.MappingNode):
            doc.problems.append(ConfigProblem(doc.file, root.start_mark.line + 1, "", top_level))
            return None
        return _Builder(loader, doc).build(root, (), root.start_mark.line + 1)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        # Not str(exc): the snippet yaml would quote may hold a secret pasted into the file.
        detail = exc.problem or "unreadable"
        if exc.context:
            begun = exc.context_mark.line + 1 if exc.context_mark is not None else line
            detail = f"{exc.context}{f' (line {begun})' if begun != line else ''}: {detail}"
        doc.problems.append(ConfigProblem(doc.file, line, "", f"invalid YAML: {detail}"))
        return None
    except yaml.YAMLError as exc:
        doc.problems.append(ConfigProblem(doc.file, None, "", f"invalid YAML: {exc}"))
        return None
    finally:
        loader.dispose()


_MERGE = "tag:yaml.org,2002:merge"


@dataclass
class _Builder:
    """Turns YAML nodes into plain data, noting the line of every key and list item."""

    loader: yaml.SafeLoader
    doc: _Document
    open_nodes: set[int] = field(default_factory=set)  # guards against an alias inside itself

    def build(self, node: yaml.Node, path: KeyPath, line: int) -> Any:
        self.doc.lines[path] = line
        if id(node) in self.open_nodes:
            self.doc.add(path, "an alias refers to itself")
            return None
        if isinstance(node, yaml.SequenceNode):
            self.open_nodes.add(id(node))
            items = [self.build(n, (*path, i), n.start_mark.line + 1) for i, n in enumerate(node.value)]
            self.open_nodes.discard(id(node))
            return items
        if isinstance(node, yaml.MappingNode):
            self.open_nodes.add(id(node))
            result = self._mapping(node, path)
            self.open_nodes.discard(id(node))
            return result
        if isinstance(node, yaml.ScalarNode):
            self.doc.scalars[path] = node.value
        return self.loader.construct_object(node)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            key_line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                if key_node.value in seen:
                    message = f"duplicate key (first at line {seen[key_node.value]})"
                    self.doc.add((*path, key_node.value), message, line=key_line)
                seen.setdefault(key_node.value, key_line)
        self.loader.flatten_mapping(node)  # applies `<<: *anchor` merges; explicit keys come last and win
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.doc.add(path, "a key must be a single plain value, not a list or mapping", line=key_line)
                continue
            # Keys as written: `1:` or `yes:` name a sink or a field, they are not numbers or booleans.
            key = key_node.value
            result[key] = self.build(value_node, (*path, key), key_line)
        return result


# ---- ${VAR} interpolation ---------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _environment(folder: Path, environ: Mapping[str, str], doc: _Document) -> dict[str, str]:
    env_file = folder / ".env"
    values: dict[str, str] = {}
    if env_file.is_file():
        try:
            # interpolate=False: expanding ${...} inside .env would consult os.environ behind the caller.
            loaded = dotenv_values(env_file, interpolate=False)
        except (OSError, UnicodeDecodeError) as exc:
            doc.problems.append(
                ConfigProblem(str(Path(doc.file).parent / ".env"), None, "", f"cannot read: {exc}")
            )
        else:
            values = {k: v for k, v in loaded.items() if v is not None}
    values.update(environ)
    return values


def _interpolate(data: Any, path: KeyPath, env: Mapping[str, str], doc: _Document) -> Any:
    if isinstance(data, dict):
        return {k: _interpolate(v, (*path, k), env, doc) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(v, (*path, i), env, doc) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data
    failures: list[str] = []
    used: list[tuple[str, str]] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        inner = match.group(1)
        if inner is None:
            failures.append("`${` is not closed (write $${ for a literal ${)")
            return match.group(0)
        name, has_default, default = inner.partition(":-")
        if not _VARIABLE.fullmatch(name) or "${" in default:
            failures.append(f"{match.group(0)} is not a reference like ${{NAME}} or ${{NAME:-default}}")
            return match.group(0)
        value = env.get(name)
        if has_default and not value:
            return default
        if value is None and doc.unset_as_written:
            return match.group(0)
        if value is None:
            failures.append(f"environment variable {name} is not set")
            return match.group(0)
        used.append((value, match.group(0)))
        return value

    result = _REFERENCE.sub(replace, data)
    for message in failures:
        doc.add(path, message)
    if failures:
        doc.unresolved.add(path)
        return data
    doc.substituted[path] = used
    return result


# ---- pydantic errors, located ------------------------------------------------------------------


def _validate(data: Any, doc: _Document) -> ConnectorConfig | None:
    return validate_located(ConnectorConfig, data, doc)


# ---- checks on the whole file ------------------------------------------------------------------


def _check_names(data: dict[Any, Any], doc: _Document) -> None:
    sources, sinks = data.get("sources", {}), data.get("sinks", {})
    if not isinstance(sources, dict) or not isinstance(sinks, dict):
        return  # already a field error; every rule would otherwise repeat it
    for path, message in unresolved_names(data.get("rules"), list(sources), list(sinks)):
        doc.add(path, message)


def _compile_rules(
    config: ConnectorConfig | None, data: dict[Any, Any], doc: _Document
) -> list[CompiledRule]:
    """Every rule compiled once, here, so that a template problem is a located config error for
    `check`, `once` and `run` alike; with other errors in the file, the texts are still checked."""
    if config is None:
        rules = data.get("rules")
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(rule, dict):
                for key, message in text_problems(rule):
                    doc.add(("rules", i, key), message)
        return []
    compiled: list[CompiledRule] = []
    for i, rule_config in enumerate(config.rules):
        try:
            compiled.append(compile_rule(rule_config))
        except RuleSyntaxError as exc:
            doc.add(("rules", i, exc.field), exc.message)
    return compiled


def _warnings(config: ConnectorConfig, doc: _Document) -> list[ConfigProblem]:
    found: list[ConfigProblem] = []
    for name, source in config.sources.items():
        if isinstance(source, WebhookConfig) and source.auth == "none":
            found.append(
                doc.problem(
                    ("sources", name, "auth"),
                    f"accepts unauthenticated requests: anyone who can reach {source.path} can send SMS",
                )
            )
    server = config.server
    if server.token is None and not _loopback(server.host):
        found.append(
            doc.problem(
                ("server", "host"),
                f"listens on {server.host} without `server.token`: anyone who can reach it reads the "
                "status page, /events, /metrics (set `token: ${CONNECTOR_TOKEN}` under `server`)",
            )
        )
    elif server.token is not None and len(server.token) < MIN_TOKEN_CHARS:
        found.append(
            doc.problem(
                ("server", "token"),
                f"is {len(server.token)} characters long: use {MIN_TOKEN_CHARS} or more random ones",
            )
        )
    return found


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
