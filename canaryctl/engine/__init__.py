"""The pure canary engine: compile steps, judge metrics, decide the next status and actions."""

from canaryctl.engine.machine import Need, hook_key, reconcile, route_of
from canaryctl.engine.steps import Step, StepKind, Strategy, compile_steps, strategy

__all__ = [
    "Need",
    "Step",
    "StepKind",
    "Strategy",
    "compile_steps",
    "hook_key",
    "reconcile",
    "route_of",
    "strategy",
]
