"""routes.yaml -> jsonschema -> frozen dataclasses.  No I/O beyond reading the file in `load_file`.

`load(text, path, env)` returns an immutable RouteTable or raises ConfigError carrying every
problem as PATH:LINE:COL.  Strings may use `${VAR}` and `${VAR:-default}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
from dataclasses import dataclass, field, fields
from functools import cached_property
from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping

import jsonschema

from . import credentials
from .located import Located as _Located, parse as _parse
from ..errors import CatalogError, ConfigError, Problem
from ..money import catalog as price_catalog
from ..money.rates import Priced, parse_prices
from ..upstream.resilience import BreakerPolicy, RetryPolicy

SCHEMA: dict = json.loads(resources.files("ccproxyd").joinpath("data/routes.schema.json").read_text())
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key_env: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = False                 # https: HTTP/2 (http2.py) when the server offers h2; off: HTTP/1.1 (http11.py); plain http is always HTTP/1.1
    ca_file: str | None = None          # a PEM bundle to trust instead of the default store (absolute)
    prices_from: str | None = None      # the catalog section pricing its models; None: by base_url host
    connect_timeout: float = 10.0
    read_timeout: float = 600.0         # longest silence between two upstream chunks
    max_connections: int = 500
    max_keepalive: int = 50
    keepalive_expiry: float = 120.0
    max_concurrency: int | None = None  # requests in flight; over it, a fast 529
    retries: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()

    def __hash__(self) -> int:
        """Hashed once (a dict key of upstream.pool on every request); equal by value, so that a
        reload that leaves a provider as it was keeps its connections."""
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = self.__dict__["_hash"] = hash(tuple(getattr(self, f.name) for f in fields(self)))
        return cached


@dataclass(frozen=True)
class Model:
    name: str
    provider: str
    upstream: str
    context_window: int
    max_output_tokens: int
    reasoning: bool = False
    max_tokens_field: str = "max_completion_tokens"
    reasoning_control: str = "reasoning_effort"
    efforts: tuple[str, ...] = ("low", "medium", "high")
    reasoning_replay: str = "none"
    sampling: bool = True
    stop_sequences: bool = True
    vision: bool = True
    structured_output: str = "json_schema"
    api: str = "chat_completions"        # or "responses" (the Responses API: OpenAI's, xAI's)
    prompt_cache_key: bool = False       # send a prompt_cache_key: a hash of the shared prefix (translate/prompt_cache)
    cache_control: bool = False          # translate Claude Code's cache_control breakpoints (OpenRouter's Claude, Gemini)
    attribution: str = "strip"           # Claude Code's attribution line: "strip" (consumed here) or "keep" (forwarded)
    web_search: str = "none"             # how the provider searches the web for the web_search server tool
    stream_usage: bool = True            # the server reports usage at the end of a stream
    # provider quirks (README "models.<name>"; each checked against the provider's documentation)
    forced_tool_choice: str = "send"     # "thinking_off": a forced tool_choice turns thinking off (DeepSeek)
    max_tools: int | None = None         # the most tools a request may offer (Kimi: 128)
    documents: str = "file"              # "text": a PDF is replaced by a note (servers without file parts)
    tool_schema: str = "json_schema"     # "gemini": tool schemas cut to Gemini's documented subset
    thought_signatures: str = "none"     # "gemini": Gemini's thought signatures ride in tool_use ids
    reasoning_details: bool = False      # reasoning_details ride in thinking signatures and go back as sent
    prices: Priced | None = None         # routes.yaml's `prices`, else the catalog's; None: unknown


@dataclass(frozen=True)
class When:
    """Conditions on the request; every one that is set must hold."""
    thinking: bool | None = None          # the client asked for thinking (enabled or adaptive)
    tools: bool | None = None             # the request carries tools
    subagent: bool | None = None          # a Claude Code subagent sent it (x-claude-code-agent-id)
    min_input_tokens: int | None = None   # estimated input is at least this many tokens


@dataclass(frozen=True)
class Route:
    match: str
    model: str
    fallbacks: tuple[str, ...] = ()
    when: When | None = None
    cache_ttl: float | None = 3600.0      # seconds; None = this route's answers are never cached


@dataclass(frozen=True)
class ClientPolicy:
    """What one client key may do (routes.yaml `clients:`); None = no limit."""
    name: str                             # the variable (or credential file) holding the key
    models: tuple[str, ...] = ()          # globs of client model names; empty = every model
    rpm: int | None = None
    tpm: int | None = None
    budget_day: float | None = None       # USD per UTC day
    budget_month: float | None = None     # USD per UTC month


@dataclass(frozen=True)
class RouteTable:
    providers: Mapping[str, Provider]
    models: Mapping[str, Model]
    routes: tuple[Route, ...]
    aliases: Mapping[str, Route] = field(default_factory=lambda: MappingProxyType({}))   # lower-case id -> route
    # routes.yaml's Claude prices by lower-case id or glob; the catalog's anthropic section otherwise
    claude_prices: Mapping[str, Priced] = field(default_factory=lambda: MappingProxyType({}))
    catalog: price_catalog.Catalog = field(default_factory=price_catalog.Catalog, repr=False)
    client_keys: tuple[str, ...] = field(default=(), repr=False)   # resolved secrets; empty = open
    client_key_names: tuple[str, ...] = ()   # the variable each of client_keys came from, in order
    clients: Mapping[str, ClientPolicy] = field(default_factory=lambda: MappingProxyType({}))   # by name
    # api_key_env name -> the key, read when the table was loaded (never on a request's path)
    provider_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    version: str = ""
    path: str = "<string>"
    warnings: tuple[Problem, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())     # plain remarks (providers no route uses), not problems

    @cached_property
    def decisions(self) -> dict:
        """config.routing.resolve's answers for this table, by what decides them."""
        return {}

    @cached_property
    def counts_input(self) -> bool:
        """Whether routing may count a request's input tokens (a `min_input_tokens` condition)."""
        return any(route.when is not None and route.when.min_input_tokens is not None
                   for route in (*self.routes, *self.aliases.values()))


# ---------------------------------------------------------------- checks

def _schema_problems(data: Any, loc: _Located) -> None:
    for err in sorted(_VALIDATOR.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        where = tuple(err.absolute_path)
        name = ".".join(str(p) for p in where) or "(top level)"
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = set(err.schema.get("properties", {}))
            for extra in sorted(set(err.instance) - allowed):
                loc.problem(loc.key_at(where + (extra,)),
                            f"{name}: unknown key '{extra}' (allowed: {', '.join(sorted(allowed))})")
            continue
        if err.validator == "required":
            loc.problem(loc.at(where), f"{name}: {err.message}")
            continue
        loc.problem(loc.at(where), f"{name}: {err.message}")


def _price_problems(raw, where: tuple, loc: _Located) -> None:
    """A model's `prices` (or a `claude_prices` entry), checked field by field (money.rates)."""
    _, problems = parse_prices(raw, model="", origin="", source="")
    for path, message in problems:
        if isinstance(raw, list) and path[:1] == ("tiers",):
            path = path[1:]                     # the list form: the tiers are `prices` itself
        full = where + path
        name = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(full))
        loc.problem(loc.at(full), f"{name}: {message}")


HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")
HEADERS_OWNED = ("host", "content-length", "transfer-encoding", "connection", "content-type")


def _header_problems(name: str, headers: dict, loc: _Located) -> None:
    for key, value in headers.items():
        where, label = ("providers", name, "headers", key), f"providers.{name}.headers.{key}"
        if not HEADER_NAME.match(key):
            loc.problem(loc.key_at(where), f"{label}: not a valid header name")
        elif key.lower() in HEADERS_OWNED:
            loc.problem(loc.key_at(where), f"{label}: ccproxyd sets this header itself")
        if not HEADER_VALUE.match(value):
            loc.problem(loc.at(where), f"{label}: header values must be printable ASCII on one line")


def ca_path(ca_file: str, table_path: str) -> str:
    """A relative `ca_file` is relative to the routing table's directory."""
    if os.path.isabs(ca_file) or table_path.startswith("<"):
        return ca_file
    return os.path.join(os.path.dirname(os.path.abspath(table_path)), ca_file)


def _ca_problems(name: str, ca_file: str, loc: _Located) -> None:
    """The bundle must load as OpenSSL would load it for a connection (no socket is opened)."""
    path = ca_path(ca_file, loc.path)
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        loc.problem(loc.at(("providers", name, "ca_file")), f"providers.{name}.ca_file: no such file: {path}")
    except (ssl.SSLError, OSError) as exc:
        loc.problem(loc.at(("providers", name, "ca_file")),
                    f"providers.{name}.ca_file: not a PEM bundle of CA certificates ({path}: {exc})")


def _semantic_problems(data: dict, loc: _Located) -> None:
    providers, models, routes = data["providers"], data["models"], data["routes"]
    for name, provider in providers.items():
        _header_problems(name, provider.get("headers") or {}, loc)
        if provider.get("ca_file"):
            _ca_problems(name, provider["ca_file"], loc)
    for name, model in models.items():
        if model["provider"] not in providers:
            loc.problem(loc.at(("models", name, "provider")),
                        f"models.{name}.provider: unknown provider '{model['provider']}' "
                        f"(known: {', '.join(sorted(providers))})")
        if "prices" in model:
            _price_problems(model["prices"], ("models", name, "prices"), loc)
        search = model.get("web_search")
        if search in ("openai", "xai") and model.get("api") != "responses":
            loc.problem(loc.at(("models", name, "web_search")),
                        f"models.{name}.web_search: {search} searches through the Responses API: set api: responses")
        if search == "openrouter" and model.get("api") == "responses":
            loc.problem(loc.at(("models", name, "web_search")),
                        f"models.{name}.web_search: openrouter searches through Chat Completions: "
                        "leave api at chat_completions")
    for alias, target in (data.get("aliases") or {}).items():
        if target not in models:
            loc.problem(loc.at(("aliases", alias)), f"aliases.{alias}: unknown model '{target}' "
                                                    f"(known: {', '.join(sorted(models))})")
    for key, prices in (data.get("claude_prices") or {}).items():
        _price_problems(prices, ("claude_prices", key), loc)
    for i, name in enumerate(data.get("client_keys") or []):
        if not credentials.lookup(name, loc.env):
            loc.problem(loc.at(("client_keys", i)), f"client_keys[{i}]: variable {name} is not set "
                                                    "(nor a credential file of that name)")
    for name in data.get("clients") or {}:
        if not credentials.lookup(name, loc.env):
            loc.problem(loc.key_at(("clients", name)), f"clients.{name}: variable {name} is not set "
                                                       "(nor a credential file of that name)")
    catch_all = None
    for i, route in enumerate(routes):
        where = ("routes", i)
        if catch_all is not None:
            loc.problem(loc.at(where), f"routes[{i}]: unreachable, routes[{catch_all}] matches every model first")
        if route["match"] == "*" and "when" not in route and catch_all is None:
            catch_all = i
        chain = [route["model"], *route.get("fallbacks", [])]
        for j, target in enumerate(chain):
            sub = where + (("model",) if j == 0 else ("fallbacks", j - 1))
            if target not in models:
                loc.problem(loc.at(sub), f"routes[{i}]: unknown model '{target}' "
                                         f"(known: {', '.join(sorted(models))})")
            elif target in chain[:j]:
                loc.problem(loc.at(sub), f"routes[{i}]: model '{target}' appears twice in the "
                                         "fallback chain (a cycle)")


# ---------------------------------------------------------------- build

def _provider(name: str, raw: dict, path: str) -> Provider:
    kwargs = {k: v for k, v in raw.items() if k not in ("headers", "retries", "breaker")}
    if raw.get("ca_file"):
        kwargs["ca_file"] = ca_path(raw["ca_file"], path)
    return Provider(name=name, headers=tuple(sorted((k.lower(), v) for k, v in (raw.get("headers") or {}).items())),
                    retries=RetryPolicy(**raw.get("retries", {})), breaker=BreakerPolicy(**raw.get("breaker", {})),
                    **kwargs)


def _priced(name: str, raw, path: str) -> Priced:
    """routes.yaml's prices for `name` (checked already by _price_problems)."""
    priced, _ = parse_prices(raw, model=name, origin="routes.yaml", source=path)
    return priced


def _catalog_price(catalog: price_catalog.Catalog, provider: dict, upstream: str) -> Priced | None:
    section = catalog.section_for(provider["base_url"], provider.get("prices_from"))
    return section.models.get(upstream.lower()) if section is not None else None


# the keys of a model written as they are (the Model dataclass holds their defaults: one source)
_MODEL_AS_WRITTEN = ("max_tokens_field", "reasoning_replay", "stop_sequences", "vision", "structured_output", "api",
                     "prompt_cache_key", "cache_control", "attribution", "web_search", "stream_usage",
                     "forced_tool_choice", "max_tools", "documents", "tool_schema", "thought_signatures",
                     "reasoning_details")


def _model(name: str, raw: dict, provider: dict, catalog: price_catalog.Catalog, path: str) -> Model:
    """The defaults that depend on `reasoning` are decided here; every other default is Model's."""
    reasoning = bool(raw.get("reasoning", False))
    upstream = raw.get("upstream", name)
    prices = (_priced(upstream, raw["prices"], path) if "prices" in raw
              else _catalog_price(catalog, provider, upstream))
    written = {key: raw[key] for key in _MODEL_AS_WRITTEN if key in raw}
    if "efforts" in raw:
        written["efforts"] = tuple(raw["efforts"])
    return Model(name=name, provider=raw["provider"], upstream=upstream, context_window=raw["context_window"],
                 max_output_tokens=raw["max_output_tokens"], reasoning=reasoning, prices=prices,
                 reasoning_control=raw.get("reasoning_control", "reasoning_effort" if reasoning else "none"),
                 sampling=raw.get("sampling", not reasoning), **written)


def _client(name: str, raw: dict) -> ClientPolicy:
    budget = raw.get("budget_usd") or {}
    return ClientPolicy(name=name, models=tuple(m.lower() for m in raw.get("models") or ()), rpm=raw.get("rpm"),
                        tpm=raw.get("tpm"), budget_day=budget.get("day"), budget_month=budget.get("month"))


def _client_key_names(data: dict) -> tuple[str, ...]:
    names = list(data.get("client_keys") or [])
    return tuple(names + [n for n in data.get("clients") or {} if n not in names])


def _cache_ttl(raw) -> float | None:
    return None if raw is False else float(raw.get("ttl", 3600.0))


def load(text: str, path: str = "<string>", env: Mapping[str, str] | None = None,
         catalog: price_catalog.Catalog | None = None) -> RouteTable:
    """Parse, validate and freeze a routing table; raise ConfigError with every problem found.
    Models without `prices` are priced from `catalog` (default: the packaged one)."""
    catalog = catalog if catalog is not None else price_catalog.packaged()
    data, loc = _parse(text, path, os.environ if env is None else env)
    if loc.problems:
        raise ConfigError(loc.problems)
    _schema_problems(data, loc)
    if not loc.problems:
        _semantic_problems(data, loc)
    if loc.problems:
        raise ConfigError(sorted(loc.problems, key=lambda p: (p.line, p.col)))
    environment = os.environ if env is None else env
    names = {p["api_key_env"] for p in data["providers"].values() if p.get("api_key_env")}
    keys = {name: key for name in sorted(names) if (key := credentials.lookup(name, environment))}
    used = _used_providers(data)
    keyless = [n for n, p in data["providers"].items() if p.get("api_key_env") and p["api_key_env"] not in keys]
    warnings = tuple(
        Problem(path, *loc.at(("providers", n, "api_key_env")),
                f"providers.{n}.api_key_env: variable {data['providers'][n]['api_key_env']} is not set "
                "(nor a credential file of that name)", warning=True)
        for n in keyless if n in used
    ) + tuple(
        Problem(path, *loc.key_at(("claude_prices", key)),
                f"claude_prices.{key}: keys are exact Claude model ids or globs of them (claude-opus-5-5, "
                f"claude-sonnet-*); '{key}' matches no id a client sends, so it prices nothing", warning=True)
        for key in (data.get("claude_prices") or {}) if not key.lower().startswith("claude") and not set("*?") & set(key)
    ) + tuple(
        Problem(path, *loc.at(("providers", n, "prices_from")),
                f"providers.{n}.prices_from: the price catalog has no section '{p['prices_from']}' "
                f"(it has: {', '.join(sorted(catalog.sections))}); its models have no price", warning=True)
        for n, p in data["providers"].items() if p.get("prices_from") and p["prices_from"] not in catalog.sections
    )
    unused = sorted(n for n in keyless if n not in used)
    notes = (f"{path}: note: no route uses provider{'s' * (len(unused) > 1)} {', '.join(unused)}, so "
             f"{' and '.join(sorted({data['providers'][n]['api_key_env'] for n in unused}))} need not be set",
             ) if unused else ()
    return RouteTable(
        providers=MappingProxyType({n: _provider(n, p, path) for n, p in data["providers"].items()}),
        models=MappingProxyType({n: _model(n, m, data["providers"][m["provider"]], catalog, path)
                                 for n, m in data["models"].items()}),
        routes=tuple(Route(match=r["match"], model=r["model"], fallbacks=tuple(r.get("fallbacks", ())),
                           when=When(**r["when"]) if "when" in r else None,
                           cache_ttl=_cache_ttl(r.get("cache", {})))
                     for r in data["routes"]),
        aliases=MappingProxyType({a.lower(): Route(match=a, model=m) for a, m in (data.get("aliases") or {}).items()}),
        claude_prices=MappingProxyType({k.lower(): _priced(k, p, path) for k, p in (data.get("claude_prices") or {}).items()}),
        catalog=catalog,
        client_keys=tuple(credentials.lookup(n, environment) or "" for n in _client_key_names(data)),
        client_key_names=_client_key_names(data),
        clients=MappingProxyType({n: _client(n, c or {}) for n, c in (data.get("clients") or {}).items()}),
        provider_keys=MappingProxyType(keys),
        version=version_of(text),
        path=path,
        warnings=warnings,
        notes=notes,
    )


def _used_providers(data: dict) -> set[str]:
    """The providers some route, fallback or alias can send a request to."""
    names = {m for r in data["routes"] for m in (r["model"], *r.get("fallbacks", ()))}
    names |= set((data.get("aliases") or {}).values())
    return {data["models"][m]["provider"] for m in names if m in data["models"]}


def version_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_file(path: str, env: Mapping[str, str] | None = None) -> RouteTable:
    """A routing table file, priced with the packaged catalog and the override file on top."""
    text = read_text(path)
    try:
        catalog = price_catalog.current()
    except CatalogError as exc:
        raise ConfigError([Problem(exc.origin, 1, 1, f"price catalog: {p}") for p in exc.problems]) from None
    return load(text, path, env, catalog)


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except IsADirectoryError:
        raise ConfigError([Problem(path, 1, 1, "is a directory, not a routing table file")]) from None
    except FileNotFoundError:
        raise ConfigError([Problem(path, 1, 1, "no such file")]) from None
    except (PermissionError, UnicodeDecodeError, OSError) as exc:
        raise ConfigError([Problem(path, 1, 1, f"cannot read: {exc}")]) from None
