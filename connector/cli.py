"""`connector run | once | check | preview | status | optout | test | schema` (SPEC.md "Command line").

Exit codes: 0 done (per-record failures are data); 1 invalid config or unusable credentials;
2 usage error (argparse's own).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from connector import __version__, logs
from connector.config_loader import LoadedConfig, default_config_path, load_config
from connector.errors import ConfigError, ConnectorError

log = structlog.get_logger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector", description="Send SMS from CSV folders, sheets and webhooks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", help="config file (default: $CONNECTOR_CONFIG, else ./config.yaml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", parents=[common], help="run every source until SIGINT/SIGTERM")
    commands.add_parser("once", parents=[common], help="one pass over every source, then exit")
    check = commands.add_parser("check", parents=[common], help="validate the config and the credentials")
    check.add_argument("--offline", action="store_true", help="skip the checks that call providers")
    preview = commands.add_parser("preview", parents=[common], help="show what would be sent; sends nothing")
    preview.add_argument("--source", action="append", help="only this source (repeatable)")
    preview.add_argument("--limit", type=int, default=50, help="records to show per source (default 50)")
    status = commands.add_parser("status", parents=[common], help="counts by state from the ledger")
    status.add_argument("--recent", type=int, default=10, help="recent failures and unknowns to list")
    optout = commands.add_parser("optout", parents=[common], help="the opt-out list kept in the ledger")
    optout.add_argument("action", choices=["add", "remove", "list"])
    optout.add_argument("numbers", nargs="*", metavar="NUMBER")
    optout.add_argument("--country", help="region of numbers written without a prefix, e.g. RO")
    optout.add_argument("--note", default="", help="why, kept with the number (add)")
    resolve = commands.add_parser(
        "resolve", parents=[common], help="a person's decision on unknown sends: sent, failed or resend"
    )
    resolve.add_argument("ids", nargs="*", metavar="ID", help="event ids (from status, /events, the page)")
    resolve.add_argument("--as", dest="verdict", required=True, choices=["sent", "failed", "resend"])
    resolve.add_argument("--note", default="", help="why: kept in the ledger, shown in the status")
    resolve.add_argument("--all-unknown", action="store_true", help="every unknown send instead of ids")
    resolve.add_argument("--source", action="append", default=[], help="with --all-unknown: only this source")
    resolve.add_argument("--rule", action="append", default=[], help="with --all-unknown: only this rule")
    resolve.add_argument("--force", action="store_true", help="decide messages that are not unknown too")
    test = commands.add_parser(
        "test", parents=[common], help="run the rule tests (*.test.yaml beside the config); sends nothing"
    )
    test.add_argument("files", nargs="*", metavar="FILE", help="these test files instead")
    schema = commands.add_parser(
        "schema", parents=[common], help="print the JSON Schema of config.yaml, for editors"
    )
    schema.add_argument("--tests", action="store_true", help="the schema of the rule-test files instead")
    return parser


# The collector's first generation is collected after this many new objects (Python's default:
# 700). A pass over a 100,000-row file keeps its records alive until their results are written,
# and at 700 that set off ~20 full collections walking all of them: 2.3 s of collecting in a 15 s
# `once` (timed with gc.callbacks), 0.5 s at 10,000, where no full collection is reached.
YOUNG_OBJECTS = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])
    args = _parser().parse_args(argv)
    if args.command == "schema":  # from the models: no config file needed
        from connector.schema import print_schema  # noqa: PLC0415 - as in _dispatch

        return print_schema(tests=args.tests)
    try:
        # The rule tests need no credentials: an unset ${VAR} stays as written.
        loaded = load_config(default_config_path(args.config), unset_as_written=args.command == "test")
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) in the config", file=sys.stderr)
        return 1
    config = loaded.config
    logs.configure(config.log.format, config.log.level, secrets=config.secrets())
    for warning in loaded.warnings:
        log.warning("config warning", problem=str(warning))
    try:
        return run_loop(_dispatch(args, loaded))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except ConnectorError as exc:
        # Once, on stderr: the console log would only say the same line again.
        print(f"connector {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `connector status | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more at exit either
        return 0
    except KeyboardInterrupt:
        return 130


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """asyncio on uvloop where it is installed (Linux, macOS): the same asyncio API, with its event
    loop and sockets in C, which about halves what the HTTP intake costs per request."""
    try:
        import uvloop  # noqa: PLC0415 - optional at run time
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _dispatch(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    from connector import commands  # noqa: PLC0415 - keeps `--help` and config errors fast

    match args.command:
        case "run":
            return await commands.run(loaded)
        case "once":
            return await commands.once(loaded)
        case "check":
            return await commands.check(loaded, online=not args.offline)
        case "preview":
            return await commands.preview(loaded, args.source, args.limit)
        case "status":
            return await commands.status(loaded, args.recent)
        case "optout":
            return await commands.optout(loaded, args.action, args.numbers, args.country, args.note)
        case "resolve":
            from connector.resolve import Asked, Verdict, resolve  # noqa: PLC0415 - as above

            verdict = Verdict(args.verdict)
            asked = Asked(args.ids, verdict, args.note, args.force, args.all_unknown, args.source, args.rule)
            return await resolve(loaded, asked)
        case "test":
            from connector.rule_tests import run_tests  # noqa: PLC0415 - as above

            return await run_tests(loaded, args.files)
    return 2
