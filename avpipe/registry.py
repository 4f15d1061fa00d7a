"""One registry shape for everything avpipe looks up by name: stages, visual backbones, fusion
models and weights (timm's ``_registry.py`` is the model).

Why one helper: four hand-written registries each had their own lookup, listing and duplicate
policy (weights silently overwrote, the others raised), and the command line found fusion-model
names by scanning source files. A :class:`Registry` gives all of them:

* ``register(name, obj, **metadata)`` — one duplicate policy: registering the *same* object again
  (a module imported twice, a spec built twice from the same values) is a no-op; a *different*
  object under a taken name raises :class:`DuplicateNameError`, so two plugins can never shadow
  each other silently;
* ``register(name, "module:attr")`` — a *lazy* entry: the name is known (listed, validated by the
  command line) without importing the module, which is imported on the first ``get``. The
  built-ins are a table of such lines in the package itself, so adding one needs no install
  metadata, no reinstall and no torch import to list or validate names;
* ``get(name)`` — raises :class:`UnknownNameError` (a ``KeyError``) saying "did you mean …";
* ``names()`` (no import), ``list()`` (every entry with its metadata, importing lazy ones);
* ``load_entry_points(group)`` — third-party packages' entry points, loaded eagerly.

This module imports nothing heavy (stdlib only): the command line builds its choices from it.
"""
from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["DuplicateNameError", "Registry", "RegistryEntry", "UnknownNameError", "closest_name"]


def closest_name(name: str, known: Iterable[str], *, typo: bool = False) -> str | None:
    """The known name a misspelt ``name`` most probably meant (case and ``_``/``-`` ignored), or None.

    The one "did you mean" of avpipe: registries and the command line ask here. Two notions of
    close, because they answer different mistakes:

    * default (a name asked of a registry): difflib finds the similar names; among them the fewest
      edits wins, counting a swap of two neighbours as one (difflib alone ranks ``rja`` above
      ``jca`` for ``jac``);
    * ``typo=True`` (a value typed on the command line): only a slip of the keyboard counts — the
      name with the fewest edits, and only when that is at most 2 and fewer than the name's length,
      so a flag never suggests a name that merely looks alike.
    """
    norm = {k.lower().replace("_", "-"): k for k in known}
    key = name.lower().replace("_", "-")
    if key in norm:
        return norm[key]
    if typo:
        scored = sorted((_edits(key, k), k) for k in norm)
        return norm[scored[0][1]] if scored and scored[0][0] <= min(2, max(1, len(key) - 1)) else None
    close = difflib.get_close_matches(key, list(norm), n=5, cutoff=0.6)
    return norm[min(close, key=lambda k: _edits(key, k))] if close else None


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap neighbours: 1 each)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


class UnknownNameError(KeyError):
    """A name no registry entry has; the message names the closest known name and all known ones."""

    def __init__(self, kind: str, name: str, known: list[str], plural: str | None = None) -> None:
        self.kind, self.name, self.known = kind, name, list(known)
        self.suggestion = closest_name(name, self.known)
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        super().__init__(f"unknown {kind} {name!r}{hint}; known {plural or kind + 's'}: "
                         f"{', '.join(self.known) or '(none)'}")

    def __str__(self) -> str:  # KeyError's own str() would quote the whole message
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """A different object registered under a name already taken."""


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """One registered name: the object and the metadata given with it (for listings)."""

    name: str
    obj: T
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Objects of one kind by name, with lazy built-ins (see the module docstring).

    ``builtins`` maps name → ``"module:attr"``; ``check(name, obj)`` validates every object
    registered (raise ``TypeError``/``ValueError`` to refuse it); ``plural`` is the kind's plural
    in messages.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str] | None = None, *,
                 check: Callable[[str, T], None] | None = None, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or kind + "s"
        self._objects: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._metadata: dict[str, dict[str, Any]] = {}
        self._check = check
        self._lock = threading.RLock()
        for name, target in (builtins or {}).items():
            self.register(name, target)

    # -- registering ---------------------------------------------------------------------------
    @property
    def objects(self) -> dict[str, T]:
        """The live name → object mapping of what is loaded (not a copy: for modules that expose
        it under an older name; prefer :meth:`register` / :meth:`unregister`)."""
        return self._objects

    def register(self, name: str, obj: T | str, **metadata: Any) -> Any:
        """Register ``obj`` (or a lazy ``"module:attr"``) under ``name``; returns what was given.

        Same object again: no-op. Different object under a taken name: :class:`DuplicateNameError`.
        An object registered under a lazy name takes its place (that is what importing the lazy
        module normally does, through its decorator).
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, not {name!r}")
        if not isinstance(obj, str) and self._check is not None:
            self._check(name, obj)  # outside the lock: a check may import (never hold it while importing)
        with self._lock:
            if isinstance(obj, str):
                self._register_lazy(name, obj)
            else:
                existing = self._objects.get(name)
                if existing is not None and not (existing is obj or existing == obj):
                    raise DuplicateNameError(f"{self.kind} {name!r} registered twice ({existing!r} and {obj!r})")
                if existing is None:
                    self._objects[name] = obj
            if metadata:
                self._metadata.setdefault(name, {}).update(metadata)
        return obj

    def _register_lazy(self, name: str, target: str) -> None:
        module, sep, attr = target.partition(":")
        if not (module and sep and attr):
            raise ValueError(f"{self.kind} {name!r}: lazy target must be 'module:attr', not {target!r}")
        old = self._lazy.get(name)
        if old is not None and old != target:
            raise DuplicateNameError(f"{self.kind} {name!r} registered twice ({old!r} and {target!r})")
        self._lazy[name] = target

    def unregister(self, name: str) -> None:
        """Forget a registered object and any lazy entry of ``name`` (tests, interactive use)."""
        with self._lock:
            self._objects.pop(name, None)
            self._lazy.pop(name, None)
            self._metadata.pop(name, None)

    def decorator(self, **metadata: Any) -> Callable[[T], T]:
        """``@REG.decorator()``: register a class under its ``name`` attribute."""
        def wrap(obj: T) -> T:
            self.register(getattr(obj, "name"), obj, **metadata)
            return obj
        return wrap

    def load_entry_points(self, group: str, *, skip_dist: str | None = None) -> list[str]:
        """Load and register every entry point of ``group`` (eagerly: a plugin's module is imported
        here, so an entry point that cannot load is an error naming it, not a surprise later).

        ``skip_dist``: a distribution whose entry points are ignored — the package's own, whose
        built-ins come from its lazy table (its install metadata may be stale).
        """
        from importlib.metadata import entry_points

        names = []
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            if skip_dist is not None and dist is not None and dist.name == skip_dist:
                continue
            try:
                obj = ep.load()
            except Exception as e:
                raise ImportError(f"{self.kind} entry point {ep.name} = {ep.value!r} cannot be loaded: {e}") from e
            self.register(ep.name, obj)
            names.append(ep.name)
        return names

    # -- looking up ----------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._objects or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def names(self) -> list[str]:
        """Every known name, sorted, loaded or lazy — imports nothing."""
        return sorted(set(self._objects) | set(self._lazy))

    def get(self, name: str) -> T:
        """The object of ``name`` (importing its module if it is a lazy built-in)."""
        obj = self._objects.get(name)
        if obj is None and name in self._lazy:
            obj = self._load(name)
        if obj is None:
            raise UnknownNameError(self.kind, name, self.names(), self.plural)
        return obj

    def metadata(self, name: str) -> dict[str, Any]:
        """The metadata registered with ``name`` (empty when none; unknown name: KeyError)."""
        if name not in self:
            raise UnknownNameError(self.kind, name, self.names(), self.plural)
        return dict(self._metadata.get(name, {}))

    def load_all(self) -> dict[str, T]:
        """Import every lazy entry; returns a copy of name → object."""
        for name in list(self._lazy):
            if name not in self._objects:
                self._load(name)
        return dict(self._objects)

    def list(self) -> list[RegistryEntry[T]]:
        """Every entry (lazy ones imported) with its metadata, sorted by name."""
        objs = self.load_all()
        return [RegistryEntry(n, objs[n], dict(self._metadata.get(n, {}))) for n in sorted(objs)]

    def _load(self, name: str) -> T:
        """Import a lazy entry's module; registers the named attribute if the module did not
        register it itself (a module may, or may not, use the decorator)."""
        module, _, attr = self._lazy[name].partition(":")
        try:  # Python's import lock serialises imports; this registry's lock is never held here
            mod = importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"{self.kind} {name!r}: module {module} cannot be imported: {e}") from e
        if name not in self._objects:
            try:
                obj = getattr(mod, attr)
            except AttributeError:
                raise ImportError(f"{self.kind} {name!r}: {module} has no {attr!r}") from None
            self.register(name, obj)
        return self._objects[name]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._objects)} loaded, {len(self._lazy)} built-in)"
