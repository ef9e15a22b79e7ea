"""The effective-dated price catalog: `data/prices.yaml` in the package, plus an override file.

    <section>:                       a provider: anthropic, openai, deepseek, openrouter, …
      hosts: [api.openai.com]        base_url hosts whose models this section prices
      models:
        <exact model id>:
          ids: [<other exact ids priced the same>]     snapshots, "[1m]" variants
          rows: [{since, source, note?, <rates> | tiers, windows?}, …]   ascending by since

A model id is matched exactly (case-insensitive), never by a family word: an id the catalog does
not list has no price.  The override file (`ccproxyd prices --refresh` writes one from
OpenRouter's models list) has the same shape; a model it lists replaces the packaged entry, a
section it names that the package lacks is added.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from ..errors import CatalogError
from ..config.settings import default_state_dir
from .rates import Priced, parse_row

PACKAGED = "data/prices.yaml"
CLAUDE = "anthropic"                     # the section the Claude reference prices come from


@dataclass(frozen=True)
class Section:
    name: str
    hosts: tuple[str, ...]
    models: Mapping[str, Priced]         # lower-case id (every listed id) -> its prices


@dataclass(frozen=True)
class Catalog:
    sections: Mapping[str, Section] = field(default_factory=lambda: MappingProxyType({}))
    origins: tuple[str, ...] = ()        # the files it was read from, packaged first

    def section_for(self, base_url: str, prices_from: str | None = None) -> Section | None:
        """A provider's section: the one it names (`prices_from`), else the one listing its host."""
        if prices_from:
            return self.sections.get(prices_from)
        host = (urlsplit(base_url).hostname or "").lower()
        return next((s for s in self.sections.values() if host in s.hosts), None)

    def claude(self, model_id: str) -> Priced | None:
        section = self.sections.get(CLAUDE)
        return section.models.get(model_id.lower()) if section is not None else None

    def merged(self, other: "Catalog") -> "Catalog":
        sections = dict(self.sections)
        for name, section in other.sections.items():
            mine = sections.get(name)
            if mine is None:
                sections[name] = section
            else:
                models = dict(mine.models)
                for key, priced in section.models.items():
                    base = models.get(key)
                    on_top = _on_top(base, priced)
                    for alias, same in mine.models.items():   # every id of that model: "[1m]", snapshots
                        if base is not None and same is base:
                            models[alias] = on_top
                    models[key] = on_top
                sections[name] = Section(name, tuple(dict.fromkeys(mine.hosts + section.hosts)),
                                         MappingProxyType(models))
        return Catalog(MappingProxyType(sections), self.origins + other.origins)


def _on_top(base: Priced | None, override: Priced) -> Priced:
    """An override's rows after the packaged rows that came before its first: history is kept."""
    if base is None:
        return override
    first = override.rows[0].since
    return Priced(override.model, override.origin,
                  tuple(r for r in base.rows if r.since < first) + override.rows)


def parse(text: str, origin: str) -> Catalog:
    """A catalog from YAML text; raises CatalogError listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(origin, [f"not YAML: {exc}"]) from None
    return build(data, origin)


def build(data: Any, origin: str) -> Catalog:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise CatalogError(origin, ["must be a mapping of provider sections"])
    sections = {}
    for name, raw in data.items():
        section = _section(str(name), raw, problems)
        if section is not None:
            sections[str(name)] = section
    if problems:
        raise CatalogError(origin, problems)
    return Catalog(MappingProxyType(sections), (origin,))


def _section(name: str, raw: Any, problems: list[str]) -> Section | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict):
        problems.append(f"{name}: needs `hosts` and `models`")
        return None
    hosts = raw.get("hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        problems.append(f"{name}.hosts: must be a list of host names")
        hosts = []
    models: dict[str, Priced] = {}
    for model_id, entry in raw["models"].items():
        where = f"{name}.models.{model_id}"
        if not isinstance(entry, dict) or not isinstance(entry.get("rows"), list) or not entry["rows"]:
            problems.append(f"{where}: needs `rows`, a list of dated prices")
            continue
        rows = []
        for i, raw_row in enumerate(entry["rows"]):
            row, found = parse_row(raw_row, dated=True)
            problems.extend(f"{where}.rows[{i}]{''.join(f'.{p}' for p in path)}: {message}" for path, message in found)
            if row is not None:
                rows.append(row)
        if any(b.since <= a.since for a, b in zip(rows, rows[1:])):
            problems.append(f"{where}.rows: must be in ascending order of `since`")
        priced = Priced(model=str(model_id), origin=name, rows=tuple(rows))
        for alias in [str(model_id), *(entry.get("ids") or [])]:
            key = str(alias).lower()
            if key in models:
                problems.append(f"{where}: id '{alias}' is listed twice in {name}")
            models[key] = priced
    return Section(name, tuple(h.lower() for h in hosts), MappingProxyType(models))


@functools.lru_cache(maxsize=1)
def packaged() -> Catalog:
    """The catalog shipped in the package (read once per process)."""
    text = resources.files("ccproxyd").joinpath(PACKAGED).read_text(encoding="utf-8")
    return parse(text, f"ccproxyd/{PACKAGED}")


def override_path() -> str:
    """Where `prices --refresh` writes and the daemon reads the override: $CCPROXYD_PRICES, else
    prices.yaml in ccproxyd's state directory."""
    return os.environ.get("CCPROXYD_PRICES") or os.path.join(default_state_dir(), "prices.yaml")


def current(path: str | None = None) -> Catalog:
    """The packaged catalog with the override file, when there is one, on top.  A broken override
    raises CatalogError (the routing table's loader reports it; the daemon keeps its last table)."""
    path = path or override_path()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return packaged()
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(path, [f"cannot read: {exc}"]) from None
    return packaged().merged(parse(text, path))
