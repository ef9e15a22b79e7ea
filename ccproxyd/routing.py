"""Pure routing: the client's model name + the table -> a Decision (ordered upstream targets)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Callable

from .config import Model, Provider, Route, RouteTable, When
from .errors import NotFound
from .translate.stream import thinking_display


@dataclass
class Features:
    """What `when:` conditions look at; input tokens are only counted if a condition asks."""
    thinking: bool = False
    display: str = "none"                # translate.stream.THINKING_DISPLAY
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
    matches `requested` (case-insensitive) and whose `when` holds wins."""
    name = requested.lower()
    features = features or Features()
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
