"""The Jinja2 sandbox every template renders in, ours and a merchant's alike: the budget's checks wired
into filters, loops, output, operators, calls and attribute access (see `budget`)."""

from __future__ import annotations

from functools import lru_cache, wraps

from jinja2 import Undefined, nodes, pass_context
from jinja2.sandbox import SandboxedEnvironment
from jinja2.visitor import NodeTransformer

from plugin.emails.budget import (
    BUDGET,
    MAX_OUTPUT,
    TemplateLimitError,
    bounded,
    built,
    check_call,
    check_widths,
    estimate,
    render_limits,
    spend,
    weight,
    widths_of_percent,
)


def _guard_filter(name: str, function):
    """A built-in filter, checked before (input size, widths) and after (output size)."""
    passes_first = getattr(function, "jinja_pass_arg", None) is not None

    @wraps(function)
    def guarded(*args, **kwargs):
        spend()
        values = list(args[1:] if passes_first else args)  # without the context/environment Jinja passes
        value = values[0] if values else None
        bounded(value, f"the input of |{name}")
        numbers = [a for a in values[1:] + list(kwargs.values()) if isinstance(a, int)]
        if any(n > MAX_OUTPUT for n in numbers):  # widths, counts (center, indent, batch, slice, …)
            raise TemplateLimitError(f"|{name} with a number over {MAX_OUTPUT}")
        if name == "replace" and isinstance(value, str) and len(values) >= 3:
            old, new = str(values[1]), str(values[2])
            if len(value) + (value.count(old) + 1) * len(new) > MAX_OUTPUT:
                raise TemplateLimitError(f"|replace would make more than {MAX_OUTPUT} characters")
        if name == "indent" and isinstance(value, str):
            width = max(numbers or [4])
            if width * (value.count("\n") + 1) + len(value) > MAX_OUTPUT:
                raise TemplateLimitError(f"|indent would make more than {MAX_OUTPUT} characters")
        if name == "format" and isinstance(value, str):
            check_widths(widths_of_percent(value))
        if name == "join" and isinstance(value, list | tuple) and len(values) > 1:
            if weight(value) + len(str(values[1])) * len(value) > MAX_OUTPUT:
                raise TemplateLimitError(f"|join would make more than {MAX_OUTPUT} characters")
        return built(function(*args, **kwargs), f"the result of |{name}")

    return guarded


@pass_context
def _steps(_context, iterable):
    """Every `for` loop iterates through this (see _Limiter): one step per item."""
    for item in iterable:
        spend()
        yield item


@pass_context
def _produced(_context, value):
    """Everything a template writes out passes here, in macros and captured blocks too."""
    budget = BUDGET.get()
    size = weight(value)
    if budget is not None:
        spend()
        budget.output -= size
        if budget.output < 0:
            raise TemplateLimitError(f"the email would be longer than {MAX_OUTPUT} characters")
    elif size > MAX_OUTPUT:
        raise TemplateLimitError(f"the email would be longer than {MAX_OUTPUT} characters")
    return value


@pass_context
def _value(_context, value):
    return built(value)


class _Limiter(NodeTransformer):
    """Rewrites a parsed template so loops, output and concatenation pass through the checks above.

    The helpers take the context, so Jinja never folds them into constants at compile time.
    """

    def visit_For(self, node: nodes.For) -> nodes.For:
        node = self.generic_visit(node)
        node.iter = _filter(node.iter, "lifecycle_steps")
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Output:
        node = self.generic_visit(node)
        node.nodes = [_filter(child, "lifecycle_produced") for child in node.nodes]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Concat:
        node = self.generic_visit(node)
        node.nodes = [_filter(child, "lifecycle_value") for child in node.nodes]
        return node


def _filter(node: nodes.Expr, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class LimitedEnvironment(SandboxedEnvironment):
    """The sandbox, bounded: output size, loop steps and time at render time, and the operators that could
    build huge values (`'x' * 10**10`) intercepted, which also keeps Jinja from folding them while it
    compiles (it would otherwise compute `'x' * 10**8` inside from_string, before any render limit)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options):
        super().__init__(undefined=Undefined, **options)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters.update(lifecycle_steps=_steps, lifecycle_produced=_produced, lifecycle_value=_value)
        for name in ("lipsum", "cycler", "joiner"):
            self.globals.pop(name, None)

    def _parse(self, source, name, filename):
        return _Limiter().visit(super()._parse(source, name, filename))

    def call_binop(self, context, operator, left, right):
        spend()
        estimate(operator, left, right)
        return built(super().call_binop(context, operator, left, right))

    def call(self, context, obj, /, *args, **kwargs):
        spend()
        check_call(obj, args, kwargs)
        return built(super().call(context, obj, *args, **kwargs))

    def getattr(self, obj, attribute):
        spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        spend()
        return super().getitem(obj, argument)


def _environment(autoescape: bool) -> LimitedEnvironment:
    return LimitedEnvironment(autoescape=autoescape, trim_blocks=True)


HTML_ENV, TEXT_ENV = _environment(True), _environment(False)


def render_source(env: LimitedEnvironment, source: str, values: dict) -> str:
    """Render under the current budget (or a new one), compiled once per source (`compiled`)."""
    with render_limits():
        spend()
        return "".join(compiled(env, source).generate(values))


@lru_cache(maxsize=512)
def compiled(env: LimitedEnvironment, source: str):
    """The template of this source in this sandbox. Jinja's `from_string` compiles anew at each call (its
    cache serves only templates loaded by name), and an email renders some thirty strings and templates:
    compiling them was nearly all of a send's CPU (about 25 ms). A compiled template holds no values: it
    renders with the sandbox's checks and the budget of each render, whatever rendered it before. The
    same source (ours, or a merchant's saved text) compiles to the same template, so the source is the
    key; an edited template is a new source."""
    return env.from_string(source)
