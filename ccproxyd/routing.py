"""Pure routing: the client's model name + the table -> a Decision (ordered upstream targets)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from .config import Model, Provider, Route, RouteTable
from .errors import NotFound


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

    @property
    def primary(self) -> Target:
        return self.targets[0]


def resolve(table: RouteTable, requested: str) -> Decision:
    """First route whose glob matches `requested` (case-insensitive) wins."""
    name = requested.lower()
    for i, route in enumerate(table.routes):
        if fnmatchcase(name, route.match.lower()):
            targets = tuple(Target(table.models[m], table.providers[table.models[m].provider])
                            for m in (route.model, *route.fallbacks))
            return Decision(requested=requested, route_index=i, route=route, targets=targets)
    raise NotFound(f"model: no route in the routing table matches '{requested}'")
