"""Send policy registry: one module per policy, one line here per module (SPEC "Send policies").

Each registered class answers `for_rule(rule, context)`: its policy for that rule, or None when the
rule does not use it. They are asked in this order, which matters only for the reason a person
reads: an opt-out first, a scheduled time, then the quiet hours that apply when it comes.
"""

from __future__ import annotations

from typing import Any

from connector.policy import Policy, PolicyContext, PolicyFactory
from policies.budget import BudgetPolicy
from policies.cap import CapPolicy
from policies.optout import OptOutPolicy
from policies.schedule import SchedulePolicy
from policies.window import WindowPolicy

REGISTERED: tuple[PolicyFactory, ...] = (
    OptOutPolicy,
    SchedulePolicy,
    WindowPolicy,
    CapPolicy,
    BudgetPolicy,
)


def policies_for(rule: Any, context: PolicyContext) -> list[Policy]:
    """The policies one rule goes through, in order (none: every message goes at once)."""
    return [policy for factory in REGISTERED if (policy := factory.for_rule(rule, context)) is not None]
