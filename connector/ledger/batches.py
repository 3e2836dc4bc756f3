"""How a group-committed batch of jobs becomes programs: most jobs run alone, but jobs of one kind
(every send marking itself `sending`, every outcome) share ONE program, so thirty-two concurrent
sends cost a few statements in one transaction, not thirty-two savepoints and round trips each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from connector.ledger.steps import Program

T = TypeVar("T")
A = TypeVar("A")
Factory = Callable[[], Program[T]]  # a program made afresh, so a driver can run it again


@dataclass(frozen=True, slots=True)
class Together(Generic[A]):
    """Work that jobs of one `kind` share in a batch: one program for all their arguments, which
    answers, in order, one result or one exception per argument (a refusal is one job's only)."""

    kind: str
    arg: A
    run: Callable[[list[A]], Program[list[Any]]]


Work = Factory[Any] | Together[Any]


@dataclass(frozen=True, slots=True)
class Unit(Generic[T]):
    """Jobs answered by one program: one result (or exception) per job, in order."""

    jobs: list[T]
    program: Factory[list[Any]]


def units(jobs: Sequence[T], work_of: Callable[[T], Work]) -> list[Unit[T]]:
    """The batch as programs to run, in the order the jobs came (a kind at its first job)."""
    planned: list[Unit[T]] = []
    shared: dict[str, list[T]] = {}
    for job in jobs:
        work = work_of(job)
        if isinstance(work, Together):
            if work.kind not in shared:
                shared[work.kind] = []
                planned.append(Unit(shared[work.kind], _together(shared[work.kind], work_of)))
            shared[work.kind].append(job)
        else:
            planned.append(Unit([job], _alone(work)))
    return planned


def answered(unit: Unit[T], results: list[Any]) -> list[tuple[T, Any, BaseException | None]]:
    """(job, result, error) for each job of a unit that ran."""
    return [
        (job, None, result) if isinstance(result, BaseException) else (job, result, None)
        for job, result in zip(unit.jobs, results, strict=True)
    ]


def _alone(factory: Factory[Any]) -> Factory[list[Any]]:
    def program() -> Program[list[Any]]:
        return [(yield from factory())]

    return program


def _together(jobs: list[T], work_of: Callable[[T], Work]) -> Factory[list[Any]]:
    def program() -> Program[list[Any]]:
        works = [work_of(job) for job in jobs]
        assert all(isinstance(w, Together) for w in works)
        first = works[0]
        assert isinstance(first, Together)
        return (yield from first.run([w.arg for w in works if isinstance(w, Together)]))

    return program
