"""YAML with positions: a routing table's text -> Python values, with the line and column of
every value and key, and `${VAR}` / `${VAR:-default}` filled in from the environment.  Problems
are collected as config Problems (PATH:LINE:COL), never raised one at a time."""

from __future__ import annotations

import re
from typing import Any, Mapping

import yaml

from . import yamlerrors
from ..errors import ConfigError, Problem

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Located:
    """Python values from a YAML node tree, with the position of every value and key."""

    def __init__(self, path: str, env: Mapping[str, str]):
        self.path = path
        self.env = env
        self.values: dict[tuple, tuple[int, int]] = {}
        self.keys: dict[tuple, tuple[int, int]] = {}
        self.problems: list[Problem] = []

    def problem(self, mark: tuple[int, int], message: str) -> None:
        self.problems.append(Problem(self.path, mark[0], mark[1], message))

    def convert(self, node: yaml.Node, where: tuple) -> Any:
        mark = (node.start_mark.line + 1, node.start_mark.column + 1)
        self.values[where] = mark
        if isinstance(node, yaml.MappingNode):
            own = {id(k) for k, _ in node.value}       # keys written here, not merged in by <<
            try:
                _scalar_loader.flatten_mapping(node)        # YAML merge keys (<<: *defaults)
            except yaml.YAMLError as exc:
                self.problem(_mark_of(exc, mark), f"YAML: {getattr(exc, 'problem', None) or exc}")
                return {}
            out: dict = {}
            written: set[str] = set()
            for key_node, value_node in node.value:
                key = self.convert(key_node, where + ("<key>",))
                key_mark = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if not isinstance(key, (str, int, float, bool)):
                    self.problem(key_mark, "mapping keys must be plain scalars")
                    continue
                key = str(key)
                if key in written and id(key_node) in own:
                    self.problem(key_mark, f"duplicate key '{key}'")
                if id(key_node) in own:
                    written.add(key)
                self.keys[where + (key,)] = key_mark
                out[key] = self.convert(value_node, where + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, where + (i,)) for i, item in enumerate(node.value)]
        try:
            value = yaml.SafeLoader.construct_object(_scalar_loader, node, deep=True)
        except yaml.YAMLError as exc:
            self.problem(mark, f"YAML: {getattr(exc, 'problem', None) or exc}")
            return None
        if isinstance(value, str):
            value = self.interpolate(value, mark)
        return value

    def interpolate(self, text: str, mark: tuple[int, int]) -> str:
        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            value = self.env.get(name)
            if value:
                return value
            if default is not None:
                return default
            self.problem(mark, f"environment variable {name} is not set and ${{{name}}} has no default")
            return ""
        return _VAR.sub(sub, text) if "${" in text else text

    def at(self, where: tuple) -> tuple[int, int]:
        while where not in self.values and where:
            where = where[:-1]
        return self.values.get(where, (1, 1))

    def key_at(self, where: tuple) -> tuple[int, int]:
        return self.keys.get(where) or self.at(where)


_scalar_loader = yaml.SafeLoader("")


def _mark_of(exc: yaml.YAMLError, default: tuple[int, int]) -> tuple[int, int]:
    mark = getattr(exc, "problem_mark", None)
    return (mark.line + 1, mark.column + 1) if mark else default


def parse(text: str, path: str, env: Mapping[str, str]) -> tuple[Any, Located]:
    loc = Located(path, env)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line, col, message = yamlerrors.explain(text, exc)          # plain words, where the fix goes
        raise ConfigError([Problem(path, line, col, message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(path, 1, 1, f"YAML: {exc}")]) from None
    if node is None:
        raise ConfigError([Problem(path, 1, 1, "the routing table is empty")])
    return loc.convert(node, ()), loc
