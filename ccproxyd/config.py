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
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping

import jsonschema
import yaml

from . import credentials, yamlerrors
from .errors import ConfigError, Problem
from .resilience import BreakerPolicy, RetryPolicy

SCHEMA: dict = json.loads(resources.files("ccproxyd").joinpath("data/routes.schema.json").read_text())
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class Provider:
    name: str
    base_url: str
    api_key_env: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    http2: bool = False                 # https: HTTP/2 (http2.py) when the server offers h2; off: HTTP/1.1 (http11.py); plain http is always HTTP/1.1
    ca_file: str | None = None          # a PEM bundle to trust instead of the default store (absolute)
    connect_timeout: float = 10.0
    read_timeout: float = 600.0         # longest silence between two upstream chunks
    max_connections: int = 500
    max_keepalive: int = 50
    keepalive_expiry: float = 120.0
    max_concurrency: int | None = None  # requests in flight; over it, a fast 529
    retries: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()


@dataclass(frozen=True)
class PriceTier:
    up_to: int | None                   # prompt tokens; None = no upper bound
    input: float                        # USD per 1M tokens
    output: float
    cached_input: float | None = None
    web_search_per_1k: float | None = None   # USD per 1,000 web searches the provider ran


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
    api: str = "chat_completions"        # or "responses" (OpenAI's Responses API)
    prompt_cache_key: bool = False       # send the hashed Claude Code session as prompt_cache_key
    web_search: str = "none"             # how the provider searches the web for the web_search server tool
    stream_usage: bool = True            # the server reports usage at the end of a stream
    prices: tuple[PriceTier, ...] = ()


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
    claude_prices: Mapping[str, tuple[PriceTier, ...]] = field(default_factory=lambda: MappingProxyType({}))
    client_keys: tuple[str, ...] = field(default=(), repr=False)   # resolved secrets; empty = open
    client_key_names: tuple[str, ...] = ()   # the variable each of client_keys came from, in order
    clients: Mapping[str, ClientPolicy] = field(default_factory=lambda: MappingProxyType({}))   # by name
    # api_key_env name -> the key, read when the table was loaded (never on a request's path)
    provider_keys: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    version: str = ""
    path: str = "<string>"
    warnings: tuple[Problem, ...] = field(default=())
    notes: tuple[str, ...] = field(default=())     # plain remarks (providers no route uses), not problems


# ---------------------------------------------------------------- YAML with positions

class _Located:
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


def _parse(text: str, path: str, env: Mapping[str, str]) -> tuple[Any, _Located]:
    loc = _Located(path, env)
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


def _tier_problems(tiers: list, where: tuple, loc: _Located) -> None:
    name = ".".join(map(str, where))
    bounds = [t.get("up_to") for t in tiers]
    for i, bound in enumerate(bounds):
        if bound is None and i != len(bounds) - 1:
            loc.problem(loc.at(where + (i,)), f"{name}[{i}]: only the last tier may omit up_to")
        if i and bound is not None and bounds[i - 1] is not None and bound <= bounds[i - 1]:
            loc.problem(loc.at(where + (i, "up_to")),
                        f"{name}[{i}].up_to: tiers must be in ascending order ({bound} <= {bounds[i - 1]})")


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
        _tier_problems(model.get("prices") or [], ("models", name, "prices"), loc)
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
    for family, tiers in (data.get("claude_prices") or {}).items():
        _tier_problems(tiers, ("claude_prices", family), loc)
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


def _tiers(raw: list | None) -> tuple[PriceTier, ...]:
    return tuple(PriceTier(up_to=t.get("up_to"), input=float(t["input"]), output=float(t["output"]),
                           cached_input=t.get("cached_input"), web_search_per_1k=t.get("web_search_per_1k"))
                 for t in raw or [])


def _model(name: str, raw: dict) -> Model:
    reasoning = bool(raw.get("reasoning", False))
    prices = _tiers(raw.get("prices"))
    return Model(
        name=name, provider=raw["provider"], upstream=raw.get("upstream", name),
        context_window=raw["context_window"], max_output_tokens=raw["max_output_tokens"],
        reasoning=reasoning,
        max_tokens_field=raw.get("max_tokens_field", "max_completion_tokens"),
        reasoning_control=raw.get("reasoning_control", "reasoning_effort" if reasoning else "none"),
        efforts=tuple(raw.get("efforts", ("low", "medium", "high"))),
        reasoning_replay=raw.get("reasoning_replay", "none"),
        sampling=raw.get("sampling", not reasoning),
        stop_sequences=raw.get("stop_sequences", True),
        vision=raw.get("vision", True),
        structured_output=raw.get("structured_output", "json_schema"),
        api=raw.get("api", "chat_completions"),
        prompt_cache_key=raw.get("prompt_cache_key", False),
        web_search=raw.get("web_search", "none"),
        stream_usage=raw.get("stream_usage", True),
        prices=prices,
    )


def _client(name: str, raw: dict) -> ClientPolicy:
    budget = raw.get("budget_usd") or {}
    return ClientPolicy(name=name, models=tuple(m.lower() for m in raw.get("models") or ()), rpm=raw.get("rpm"),
                        tpm=raw.get("tpm"), budget_day=budget.get("day"), budget_month=budget.get("month"))


def _client_key_names(data: dict) -> tuple[str, ...]:
    names = list(data.get("client_keys") or [])
    return tuple(names + [n for n in data.get("clients") or {} if n not in names])


def _cache_ttl(raw) -> float | None:
    return None if raw is False else float(raw.get("ttl", 3600.0))


def load(text: str, path: str = "<string>", env: Mapping[str, str] | None = None) -> RouteTable:
    """Parse, validate and freeze a routing table; raise ConfigError with every problem found."""
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
    )
    unused = sorted(n for n in keyless if n not in used)
    notes = (f"{path}: note: no route uses provider{'s' * (len(unused) > 1)} {', '.join(unused)}, so "
             f"{' and '.join(sorted({data['providers'][n]['api_key_env'] for n in unused}))} need not be set",
             ) if unused else ()
    return RouteTable(
        providers=MappingProxyType({n: _provider(n, p, path) for n, p in data["providers"].items()}),
        models=MappingProxyType({n: _model(n, m) for n, m in data["models"].items()}),
        routes=tuple(Route(match=r["match"], model=r["model"], fallbacks=tuple(r.get("fallbacks", ())),
                           when=When(**r["when"]) if "when" in r else None,
                           cache_ttl=_cache_ttl(r.get("cache", {})))
                     for r in data["routes"]),
        aliases=MappingProxyType({a.lower(): Route(match=a, model=m) for a, m in (data.get("aliases") or {}).items()}),
        claude_prices=MappingProxyType({f.lower(): _tiers(t) for f, t in (data.get("claude_prices") or {}).items()}),
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
    return load(read_text(path), path, env)


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
