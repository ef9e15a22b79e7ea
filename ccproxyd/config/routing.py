"""Pure routing: the client's model name + the table -> a Decision (ordered upstream targets)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Callable

from .table import Model, Provider, Route, RouteTable, When
from ..errors import NotFound, PromptTooLong


THINKING_DISPLAY = ("summarized", "omitted", "none")   # "none": the request did not ask for thinking


def thinking_display(body: dict) -> str:
    """What the request asked to see of the model's reasoning (docs/PROTOCOL.md §2, `thinking`)."""
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    if thinking.get("type") not in ("enabled", "adaptive"):
        return "none"
    return "omitted" if thinking.get("display") == "omitted" else "summarized"


@dataclass
class Features:
    """What `when:` conditions look at; input tokens are only counted if a condition asks."""
    thinking: bool = False
    display: str = "none"                # THINKING_DISPLAY
    tools: bool = False
    subagent: bool = False
    count_input: Callable[[], int] = lambda: 0
    _input: int | None = None

    @property
    def input_tokens(self) -> int:
        if self._input is None:
            self._input = self.count_input()
        return self._input


def features_of(body: dict, count_input: Callable[[], int], subagent: bool = False) -> Features:
    display = thinking_display(body)
    return Features(thinking=display != "none", display=display, tools=bool(body.get("tools")),
                    subagent=subagent, count_input=count_input)


def holds(when: When | None, features: Features) -> bool:
    if when is None:
        return True
    if when.thinking is not None and when.thinking != features.thinking:
        return False
    if when.tools is not None and when.tools != features.tools:
        return False
    if when.subagent is not None and when.subagent != features.subagent:
        return False
    if when.min_input_tokens is not None and features.input_tokens < when.min_input_tokens:
        return False
    return True


ALIAS_ROUTE = -1             # the route index of a request that named an alias


@dataclass(frozen=True)
class Target:
    model: Model
    provider: Provider


@dataclass(frozen=True)
class Decision:
    requested: str           # the model name the client sent; echoed back in every answer
    route_index: int
    route: Route
    targets: tuple[Target, ...]
    thinking: str = "none"               # what the client asked to see of the reasoning

    @property
    def primary(self) -> Target:
        return self.targets[0]


def resolve(table: RouteTable, requested: str, features: Features | None = None) -> Decision:
    """An alias names its model directly (route index -1); otherwise the first route whose glob
    matches `requested` (case-insensitive) and whose `when` holds wins.  Kept by the table, by the
    name and the features that decide it (when no route counts input tokens), DECISIONS_KEPT
    of them."""
    features = features or Features()
    if table.counts_input:
        return _resolve(table, requested, features)
    key = (requested, features.thinking, features.display, features.tools, features.subagent)
    decision = table.decisions.get(key)
    if decision is None:
        decision = _resolve(table, requested, features)
        if len(table.decisions) < DECISIONS_KEPT:
            table.decisions[key] = decision
    return decision


DECISIONS_KEPT = 1024       # model names and features a table keeps decisions for (clients name them)


def _resolve(table: RouteTable, requested: str, features: Features) -> Decision:
    name = requested.lower()
    alias = table.aliases.get(name)
    if alias is not None:
        model = table.models[alias.model]
        return Decision(requested=requested, route_index=ALIAS_ROUTE, route=alias,
                        targets=(Target(model, table.providers[model.provider]),), thinking=features.display)
    for i, route in enumerate(table.routes):
        if fnmatchcase(name, route.match.lower()) and holds(route.when, features):
            targets = tuple(Target(table.models[m], table.providers[table.models[m].provider])
                            for m in (route.model, *route.fallbacks))
            return Decision(requested=requested, route_index=i, route=route, targets=targets,
                            thinking=features.display)
    raise NotFound(f"model: no route in the routing table matches '{requested}'")


def counts_input(table: RouteTable, requested: str, features: Features) -> bool:
    """Whether resolving `requested` reaches a `min_input_tokens` condition whose other conditions
    hold, so that the input must be counted (the caller counts it off the event loop first)."""
    if not table.counts_input:
        return False
    name = requested.lower()
    if name in table.aliases:
        return False
    for route in table.routes:
        if not fnmatchcase(name, route.match.lower()):
            continue
        when = route.when
        if when is not None and when.min_input_tokens is not None:
            if holds(replace(when, min_input_tokens=None), features):
                return True
        elif holds(when, features):
            return False
    return False


def output_reserve(max_tokens: int, model: Model) -> int:
    """The room an answer needs beside the prompt: the request's max_tokens, as the model's
    max_output_tokens caps it (the translator sends no more upstream)."""
    return min(max_tokens, model.max_output_tokens)


def input_room(decision: Decision, max_tokens: int) -> int:
    """The most input every target holds beside the output reserve: a request whose input is
    at most this many tokens fits them all, and no count is needed."""
    return min(t.model.context_window - output_reserve(max_tokens, t.model) for t in decision.targets)


def fit_window(decision: Decision, max_tokens: int, input_tokens: int) -> Decision:
    """The decision with only the targets whose window holds the counted input plus the output
    reserve (route order kept: the primary when it fits, else the first fallback that does);
    PromptTooLong, before any upstream call, when none does.  The limit it names is the most
    input the primary takes beside this request's reserve, so that a client that trims its
    conversation by the difference fits."""
    fits = tuple(t for t in decision.targets
                 if input_tokens + output_reserve(max_tokens, t.model) <= t.model.context_window)
    if not fits:
        primary = decision.primary.model
        raise PromptTooLong(input_tokens, max(0, primary.context_window - output_reserve(max_tokens, primary)))
    return decision if fits == decision.targets else replace(decision, targets=fits)
