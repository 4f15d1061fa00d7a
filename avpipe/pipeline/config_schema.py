"""Typed configs: validation on every read, one canonical form for fingerprints, file round-trip.

Why one module: the cache key of a stage is a hash of its *canonical* config, so every place
that turns a config into bytes must do it the same way (:func:`canonical_json`), and every place
that turns user input into a config must check and coerce it the same way
(:func:`config_from_dict` and the :func:`config_dataclass` decorator). Coercion is what makes
"one value, one fingerprint" hold: ``n_mels = 64``, ``64.0`` and ``"64"`` all become the int 64
before anything is hashed, while ``64.5`` is refused.

Validation is pydantic's (lax mode: lossless conversions only). Every failure is re-raised as a
:class:`ConfigError` whose lines read like ``[stages.faces] key_interval = 0: must be >= 1`` —
the section, the key, the value and what is allowed — so the CLI can print it as a usage error
(exit 2) before any work starts.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BeforeValidator, ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as _pydantic_dataclass
from pydantic.errors import PydanticSchemaGenerationError

T = TypeVar("T")

#: Placeholder for "no value to show" (an issue about a whole section or file).
NO_VALUE: Any = object()


# -- errors ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConfigIssue:
    """One bad value: where it is, what it was, what is allowed.

    ``flag`` is set when the value came from a command-line flag (the message then names the
    flag instead of the file section).
    """

    section: str
    key: str
    value: Any
    message: str
    flag: str | None = None

    def __str__(self) -> str:
        if self.flag:
            shown = self.value if isinstance(self.value, str) else format_value(self.value)
            return f"{self.flag} {shown}: {self.message}"
        where = f"[{self.section}]" if self.section else ""
        if not self.key:
            return f"{where}: {self.message}" if where else self.message
        lhs = f"{where} {self.key}".strip()
        if self.value is NO_VALUE:
            return f"{lhs}: {self.message}"
        return f"{lhs} = {format_value(self.value)}: {self.message}"


class ConfigError(ValueError):
    """A bad config value, unknown key or unreadable config file: a usage error (exit 2).

    ``issues`` holds one :class:`ConfigIssue` (or plain message) per problem; ``str()`` is one
    line per problem. Subclass of ``ValueError`` so older ``except ValueError`` callers still
    catch it.
    """

    def __init__(self, issues: ConfigIssue | str | Iterable[ConfigIssue | str]) -> None:
        if isinstance(issues, (ConfigIssue, str)):
            issues = [issues]
        self.issues: list[ConfigIssue | str] = list(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(i) for i in self.issues)

    @property
    def lines(self) -> list[str]:
        return [str(i) for i in self.issues]

    def in_section(self, section: str) -> "ConfigError":
        """The same issues, labelled with ``section`` (e.g. ``stages.faces``)."""
        return ConfigError([dataclasses.replace(i, section=section) if isinstance(i, ConfigIssue) else i
                            for i in self.issues])

    def from_flags(self, flags: dict[str, str]) -> "ConfigError":
        """The same issues, naming the command-line flag for keys in ``flags`` (key -> flag)."""
        return ConfigError([dataclasses.replace(i, flag=flags[i.key])
                            if isinstance(i, ConfigIssue) and i.key in flags else i for i in self.issues])


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist (also a ``FileNotFoundError`` for callers that expect one)."""


def format_value(v: Any) -> str:
    """A value as it would be written in a TOML config (strings quoted, true/false)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float) and math.isfinite(v):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {format_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def _toml_key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else json.dumps(k)


_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
_KINDS = {
    "int_from_float": "must be a whole number",
    "int_parsing": "must be an integer", "int_type": "must be an integer",
    "float_parsing": "must be a number", "float_type": "must be a number",
    "bool_parsing": "must be true or false", "bool_type": "must be true or false",
    "string_type": "must be a string", "dict_type": "must be a table (mapping)",
    "list_type": "must be a list", "tuple_type": "must be a list",
    "finite_number": "must be a finite number",
}


def _message(err: dict[str, Any]) -> str:
    t, ctx = err["type"], err.get("ctx") or {}
    if t in _BOUNDS:
        bound = next(iter(ctx.values()))
        text = f"must be {_BOUNDS[t]} {bound}"
    elif t == "literal_error":
        text = f"must be one of {ctx.get('expected')}"
    elif t in _KINDS:
        text = _KINDS[t]
    elif t in ("value_error", "assertion_error"):
        text = str(ctx.get("error") or err["msg"])
    elif t == "too_short" or t == "too_long" or (t == "missing" and len(err["loc"]) > 1):
        text = "wrong number of items"
    elif t == "string_pattern_mismatch":
        text = f"must match {ctx.get('pattern')}"
    else:
        msg = str(err["msg"])
        text = msg.replace("Input should be", "must be").replace("Value error, ", "")
    inner = [str(p) for p in err["loc"][1:]]
    if inner and t not in ("too_short", "too_long", "missing"):
        text = f"item {'.'.join(inner)}: {text}"
    return text


def issues_from_validation(e: ValidationError, section: str, given: dict[str, Any] | None = None,
                           valid_keys: Iterable[str] = ()) -> list[ConfigIssue]:
    """pydantic's errors as one :class:`ConfigIssue` per key (first error of a key wins)."""
    given = given or {}
    out: dict[str, ConfigIssue] = {}
    for err in e.errors():
        loc = err.get("loc") or ()
        key = str(loc[0]) if loc else ""
        if key in out:
            continue
        if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            out[key] = ConfigIssue(section, key, given.get(key, err.get("input", NO_VALUE)),
                                   unknown_key_message(key, valid_keys))
            continue
        value = given.get(key, err.get("input", NO_VALUE)) if key else NO_VALUE
        out[key] = ConfigIssue(section, key, value, _message(err))
    return list(out.values())


def unknown_key_message(key: str, valid: Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown option{hint}; valid options: {', '.join(valid) or '(none)'}"


# -- typed config classes ----------------------------------------------------------------------
def _reject_bool(v: Any) -> Any:
    """``true`` is not a number: without this pydantic would read it as 1."""
    if isinstance(v, bool):
        raise ValueError("must be a number, not true/false")
    return v


#: Largest magnitude an ``Int`` option may have: what a 64-bit signed integer holds (seeds,
#: sizes and counts are handed to numpy/torch/HDF5, which cannot take more).
INT_LIMIT = 2**63 - 1


def _int_in_range(v: int) -> int:
    if not -INT_LIMIT - 1 <= v <= INT_LIMIT:
        raise ValueError(f"must be between {-INT_LIMIT - 1} and {INT_LIMIT} (a 64-bit integer)")
    return v


def _finite(v: float) -> float:
    """Why: ``inf`` passes every ``gt``/``ge`` bound and trains to NaN, or fails per video at run
    time; a typed config refuses it where it is parsed (NaN fails the bounds, or here)."""
    if not math.isfinite(v):
        raise ValueError("must be a finite number (not inf or nan)")
    return v


def _not_nan(v: float) -> float:
    if math.isnan(v):
        raise ValueError("must be a number (not nan)")
    return v


#: ``int``/``float`` for config fields: lax (64.0 and "64" read as 64) but never a bool; an
#: ``Int`` fits 64 bits, a ``Float`` is finite.
Int = Annotated[int, BeforeValidator(_reject_bool), AfterValidator(_int_in_range)]
Float = Annotated[float, BeforeValidator(_reject_bool), AfterValidator(_finite)]
#: A float where ``inf`` means "no limit" (documented as such on the option); never NaN.
FloatOrInf = Annotated[float, BeforeValidator(_reject_bool), AfterValidator(_not_nan)]

#: ``populate_by_name``: an option stored under another key (``Field(alias=...)``, see
#: :func:`stored_keys`) is still set by its Python name in code (pydantic >= 2.6 reads it).
_PYDANTIC_CONFIG = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def config_dataclass(cls: type[T]) -> type[T]:
    """Make ``cls`` a validated config dataclass (a pydantic dataclass raising :class:`ConfigError`).

    Construction (``FacesConfig(key_interval=0)``) and attribute assignment are checked and
    coerced to the declared types; errors come out as :class:`ConfigError` labelled with the
    class name (:func:`config_from_dict` relabels them with the file section). The result is still
    a standard dataclass: ``dataclasses.asdict``/``replace``/``fields`` work as before, and a
    ``Field(description=...)`` on each option is its help text (``avpipe config show``).
    """
    pcls: Any = _pydantic_dataclass(cls, config=_PYDANTIC_CONFIG)
    section = pcls.__name__
    init, setattr_ = pcls.__init__, pcls.__setattr__
    valid = [f.name for f in dataclasses.fields(pcls)]

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as e:
            given = dict(zip(valid, args)) | kwargs
            raise ConfigError(issues_from_validation(e, section, given, valid)) from None

    @functools.wraps(setattr_)
    def __setattr__(self: Any, name: str, value: Any) -> None:
        try:
            setattr_(self, name, value)
        except ValidationError as e:
            raise ConfigError(issues_from_validation(e, section, {name: value}, valid)) from None

    pcls.__init__ = __init__
    pcls.__setattr__ = __setattr__
    return pcls


def registry_choice(names: Callable[[], Iterable[str]], what: str) -> Any:
    """An ``AfterValidator`` accepting only names in a registry that can grow (backbones, models).

    The names are read when a value is checked, so entries registered by plugins count; an empty
    registry accepts anything (the step that needs the entry then says what is missing).
    """
    def check(name: str) -> str:
        known = sorted(names())
        if known and name not in known:
            raise ValueError(f"unknown {what}; known: {', '.join(known)}")
        return name

    check.choices = lambda: sorted(names())  # type: ignore[attr-defined]  # for option_allowed / config show
    return AfterValidator(check)


def is_validated(cls: type) -> bool:
    """True for classes made by :func:`config_dataclass` (pydantic dataclasses)."""
    return hasattr(cls, "__pydantic_fields__")


def option_help(cls: type, name: str) -> str:
    """The help text of option ``name`` (its Field description; '' when it has none)."""
    info = getattr(cls, "__pydantic_fields__", {}).get(name)
    return (info.description or "") if info is not None else ""


def option_allowed(cls: type, name: str) -> str:
    """What values option ``name`` allows, in words (bounds and closed sets), or ''."""
    info = getattr(cls, "__pydantic_fields__", {}).get(name)
    if info is None:
        return ""
    parts: list[str] = []
    for m in info.metadata:
        choices = getattr(getattr(m, "func", None), "choices", None)  # see :func:`registry_choice`
        if choices is not None:
            parts.append("one of " + ", ".join(format_value(x) for x in choices()))
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{op} {getattr(m, attr)}")
    ann = info.annotation
    args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
    for a in args:
        if typing.get_origin(a) is typing.Literal:
            parts.append("one of " + ", ".join(format_value(x) for x in typing.get_args(a)))
    if type(None) in args:
        parts.append("may be unset")
    return "; ".join(parts)


# -- canonical form ----------------------------------------------------------------------------
def stored_keys(cls: type) -> dict[str, str]:
    """Python name -> key in files, for the options stored under another key.

    An option renamed in code (``Field(alias="old")``) keeps the key files, canonical JSON and
    fingerprints already hold: renaming the attribute must not change what is stored.
    """
    return {name: info.alias for name, info in getattr(cls, "__pydantic_fields__", {}).items()
            if info.alias and info.alias != name}


def config_keys(cls: type) -> list[str]:
    """The keys a file (or dict) of ``cls`` may hold, in field order."""
    keys = stored_keys(cls)
    return [keys.get(f.name, f.name) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def with_stored_keys(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` (keyed by Python names, e.g. ``dataclasses.asdict``) keyed as files store it."""
    keys = stored_keys(cls)
    return {keys.get(k, k): v for k, v in d.items()} if keys else d


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict keyed as files store it (nested dataclasses, tuples → lists)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass config, got {type(cfg).__name__}")
    return _plain(with_stored_keys(type(cfg), dataclasses.asdict(cfg)))  # type: ignore[arg-type]


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats by repr."""
    if dataclasses.is_dataclass(value):
        value = config_to_dict(value)
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# -- reading -----------------------------------------------------------------------------------
def config_from_dict(cls: type[T], data: dict[str, Any] | None, *, section: str | None = None) -> T:
    """Build (check and coerce) a dataclass config from a dict.

    Every problem — unknown keys and bad values together — is reported at once as a
    :class:`ConfigError` labelled with ``section`` (default: the class name). Classes made by
    :func:`config_dataclass` validate themselves; plain dataclasses (e.g. a plugin's) are
    validated against their annotations through a pydantic ``TypeAdapter``.
    """
    section = section or cls.__name__
    if data is not None and not isinstance(data, dict):
        raise ConfigError(ConfigIssue(section, "", NO_VALUE, f"must be a table of options, got {format_value(data)}"))
    data = dict(data or {})
    names = config_keys(cls)
    issues: list[ConfigIssue | str] = [ConfigIssue(section, k, data[k], unknown_key_message(k, names))
                                       for k in sorted(set(data) - set(names))]
    known = {k: v for k, v in data.items() if k in names}
    try:
        obj = _build(cls, known, section, names)
    except ConfigError as e:
        issues += e.in_section(section).issues
        obj = None
    if issues:
        raise ConfigError(issues)
    return obj  # type: ignore[return-value]


def _build(cls: type[T], known: dict[str, Any], section: str, names: list[str]) -> T:
    if is_validated(cls):
        return cls(**known)
    try:
        adapter = _adapter(cls)
    except PydanticSchemaGenerationError:  # a plain dataclass with types pydantic cannot check
        try:
            return cls(**known)
        except (TypeError, ValueError) as e:
            raise ConfigError(ConfigIssue(section, "", NO_VALUE, str(e))) from None
    try:
        return adapter.validate_python(known)
    except ValidationError as e:
        raise ConfigError(issues_from_validation(e, section, known, names)) from None


@functools.lru_cache(maxsize=None)
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict (unreadable or malformed: :class:`ConfigError`)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigFileNotFoundError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read ({e})") from None
    if p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON ({e}); use .json or .toml") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a table of options at the top level")
    return data


def save_config_file(data: dict[str, Any], path: str | Path) -> None:
    """Write a config dict as pretty JSON (atomically)."""
    from avpipe.pipeline.atomic import atomic_write_text

    atomic_write_text(Path(path), json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")


__all__ = ["NO_VALUE", "ConfigError", "ConfigFileNotFoundError", "ConfigIssue", "Float", "FloatOrInf", "Int", "canonical_json", "config_dataclass",
           "config_from_dict", "config_to_dict", "format_value", "load_config_file", "option_allowed",
           "option_help", "save_config_file"]
