"""Named registries: how objectives, processes, samplers and model architectures plug into the runner.

A new piece registers itself under a name (`@OBJECTIVES.register("mine")`) in its own file; the runner looks names up
and never branches on them. Looking up an unknown name is an error that lists the registered ones.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry map for one kind of plug-in (e.g. 'distillation objective')."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None, *, replace: bool = False):
        """Register `entry` under `name`; without `entry`, returns a decorator that registers what it decorates.

        Registering a taken name is an error unless `replace=True`.
        """
        def add(value: T) -> T:
            if not replace and name in self._entries:
                raise ValueError(f"a {self.kind} named {name!r} is already registered")
            self._entries[name] = value
            return value

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {sorted(self._entries)}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def dataclass_from_options(cls: Callable[..., T], options: dict, what: str) -> T:
    """`cls(**options)` for a dataclass, with an unknown field reported by name (and the valid ones)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"{what} has no field(s) {unknown}; its fields: {sorted(fields)}")
    return cls(**options)
