"""What one email's rendering may spend (output, steps, time, the size of built values), and the checks
that refuse an operation before it would go over (`'x' * 10**10`, a huge format width)."""

from __future__ import annotations

import contextlib
import re
import string
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal

from jinja2.sandbox import SecurityError

# Limits of one email's rendering (every part, ours and the merchant's, counted together).
MAX_OUTPUT = (
    500_000  # characters produced; also the largest value a template may build (Gmail clips at 102 KB)
)
MAX_STEPS = 100_000  # loop iterations, calls, filters and lookups
MAX_BUILT = 10 * MAX_OUTPUT  # characters of all the values operators, calls and filters build, kept or not
MAX_RENDER_SECONDS = 1.0
MAX_INT_BITS = 4096  # integers a template computes (`10**10` is 34 bits)


class TemplateLimitError(SecurityError):
    """A template went past a rendering limit (size, steps, time)."""


@dataclass
class _Budget:
    deadline: float
    steps: int = MAX_STEPS
    output: int = MAX_OUTPUT
    built: int = MAX_BUILT


BUDGET: ContextVar[_Budget | None] = ContextVar("lifecycle_template_budget", default=None)


@contextlib.contextmanager
def render_limits() -> Iterator[_Budget]:
    """One budget for everything rendered inside (an inner `render_limits` shares the outer one)."""
    budget = BUDGET.get()
    if budget is not None:
        yield budget
        return
    budget = _Budget(deadline=time.monotonic() + MAX_RENDER_SECONDS)
    token = BUDGET.set(budget)
    try:
        yield budget
    finally:
        BUDGET.reset(token)


def spend(steps: int = 1) -> None:
    """A checkpoint: count a step and watch the clock (outside a render, e.g. while compiling: nothing)."""
    budget = BUDGET.get()
    if budget is None:
        return
    budget.steps -= steps
    if budget.steps < 0:
        raise TemplateLimitError(f"the template takes more than {MAX_STEPS} steps (loops, calls)")
    if time.monotonic() > budget.deadline:
        raise TemplateLimitError(f"the template takes longer than {MAX_RENDER_SECONDS:g} s to render")


def weight(value, limit: int = MAX_OUTPUT) -> int:
    """About how many characters a value makes when written out; stops counting past `limit`."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, dict):
        value = list(value.items())
    if isinstance(value, list | tuple | set | frozenset):
        total = len(value)
        for item in value:
            if total > limit:
                break
            total += weight(item, limit - total)
        return total
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        return limit + 1
    return 1


def bounded(value, what: str = "a value"):
    if weight(value) > MAX_OUTPUT:
        raise TemplateLimitError(f"{what} would be larger than {MAX_OUTPUT} characters")
    return value


def built(value, what: str = "a value"):
    """A value the template just built: bounded, and counted (a list can keep many large values)."""
    size = weight(value)
    if size > MAX_OUTPUT:
        raise TemplateLimitError(f"{what} would be larger than {MAX_OUTPUT} characters")
    budget = BUDGET.get()
    if budget is not None and size > 1:
        budget.built -= size
        if budget.built < 0:
            raise TemplateLimitError(f"the template builds values of more than {MAX_BUILT} characters")
    return value


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")


def widths_of_percent(fmt: str) -> list[int]:
    """The widths and precisions of a `%` format (`*` counts as unbounded)."""
    widths = []
    for match in _PERCENT_SPEC.finditer(fmt):
        widths += [MAX_OUTPUT + 1 if g == "*" else int(g) for g in match.groups() if g]
    return widths


def widths_of_format(fmt: str) -> list[int]:
    """The numbers in the format specs of a str.format string (a nested field counts as unbounded)."""
    widths = []
    for _, field_name, spec, _ in string.Formatter().parse(fmt):
        if field_name is not None and spec:
            widths += [MAX_OUTPUT + 1] if "{" in spec else [int(n) for n in re.findall(r"\d+", spec)]
    return widths


def check_widths(widths: list[int]) -> None:
    if any(width > MAX_OUTPUT for width in widths):
        raise TemplateLimitError(f"a format width over {MAX_OUTPUT} characters")


def estimate(op: str, left, right) -> None:
    """Refuse an operation before it runs when its result would be over the limits."""
    numbers = (int, float, Decimal)
    if op == "*":
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimitError(f"a number larger than {MAX_INT_BITS} bits")
        elif isinstance(left, int) or isinstance(right, int):
            times, seq = (left, right) if isinstance(left, int) else (right, left)
            if not isinstance(seq, numbers) and times > 0 and times * max(1, weight(seq)) > MAX_OUTPUT:
                raise TemplateLimitError(f"a value larger than {MAX_OUTPUT} characters")
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        if abs(left) > 1 and (right > MAX_INT_BITS or max(1, left.bit_length()) * right > MAX_INT_BITS):
            raise TemplateLimitError(f"a number larger than {MAX_INT_BITS} bits")
    elif op == "+" and not isinstance(left, numbers):
        if weight(left) + weight(right) > MAX_OUTPUT:
            raise TemplateLimitError(f"a value larger than {MAX_OUTPUT} characters")
    elif op == "%" and isinstance(left, str):
        check_widths(widths_of_percent(left))
        bounded(right, "the values formatted")


SIZED_METHODS = {"center", "ljust", "rjust", "zfill"}


def check_call(obj, args, kwargs) -> None:
    """Refuse a str method call whose result would be over the limits, before it runs."""
    target = getattr(obj, "__wrapped__", obj)  # the sandbox wraps str.format at attribute access
    owner = getattr(target, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(target, "__name__", "")
    if name in ("format", "format_map"):
        check_widths(widths_of_format(owner))
        bounded([args, kwargs], "the values formatted")
    if name in SIZED_METHODS and args and isinstance(args[0], int) and args[0] > MAX_OUTPUT:
        raise TemplateLimitError(f"{name}() wider than {MAX_OUTPUT} characters")
    if name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        if size * owner.count("\t") + len(owner) > MAX_OUTPUT:
            _too_big(name)
    if name == "join" and args:
        if weight(args[0]) + len(owner) * weight(args[0]) > MAX_OUTPUT:
            _too_big(name)
    if name == "replace" and len(args) >= 2 and isinstance(args[1], str):
        if len(owner) + (owner.count(args[0]) + 1) * len(args[1]) > MAX_OUTPUT:
            _too_big(name)


def _too_big(what: str):
    raise TemplateLimitError(f"{what}() would make more than {MAX_OUTPUT} characters")
