"""Name -> class registries for models, dataset builders, processors, tasks, runners and LR schedulers.

A miss raises ``KeyError`` naming the kind, the closest registered names and the command that
lists them all; a name taken by another class raises naming both definitions. The registry
holds classes only: no paths, no run state.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, TypeVar

T = TypeVar("T", bound=type)

KINDS = ("model", "builder", "processor", "task", "runner", "lr_scheduler")


def qualified_name(obj) -> str:
    """``module.QualName`` of a class, as error messages name definitions."""
    return f"{obj.__module__}.{obj.__qualname__}"


class Registry:
    def __init__(self) -> None:
        self._maps: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
        self._builtins: tuple[str, ...] = ()
        self._builtins_loaded = False

    def add_builtins(self, *modules: str) -> None:
        """Modules (by name) that register a package's own classes, imported on the first lookup: the package says
        which (``vcap/__init__.py``), so that the registry knows no component and ``vcap --help`` imports neither
        torch nor transformers."""
        self._builtins += modules
        self._builtins_loaded = False

    def ensure_builtins(self) -> None:
        """Import the modules ``add_builtins`` named (once)."""
        if self._builtins_loaded:
            return
        self._builtins_loaded = True
        for module in self._builtins:
            importlib.import_module(module)

    # -- registration -------------------------------------------------------------------------
    def _register(self, kind: str, name: str) -> Callable[[T], T]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"register_{kind}: the name must be a non-empty string, got {name!r}")

        def wrap(cls: T) -> T:
            table = self._maps[kind]
            old = table.get(name)
            # The same class imported twice (e.g. as __main__ and as a module) is the same definition.
            if old is not None and old is not cls and qualified_name(old) != qualified_name(cls):
                raise ValueError(
                    f"{kind} name {name!r} is already registered by {qualified_name(old)}; "
                    f"{qualified_name(cls)} tries to register it again. Pick another name."
                )
            table[name] = cls
            return cls

        return wrap

    def register_model(self, name: str):
        return self._register("model", name)

    def register_builder(self, name: str):
        return self._register("builder", name)

    def register_processor(self, name: str):
        return self._register("processor", name)

    def register_task(self, name: str):
        return self._register("task", name)

    def register_runner(self, name: str):
        return self._register("runner", name)

    def register_lr_scheduler(self, name: str):
        return self._register("lr_scheduler", name)

    # -- lookup -------------------------------------------------------------------------------
    def get(self, kind: str, name: str) -> type:
        self.ensure_builtins()
        if kind not in self._maps:
            raise KeyError(f"unknown registry kind {kind!r}; kinds are {', '.join(KINDS)}")
        table = self._maps[kind]
        if name in table:
            return table[name]
        close = difflib.get_close_matches(str(name), list(table), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        plural = {"lr_scheduler": "lr_schedulers"}.get(kind, kind + "s")
        raise KeyError(
            f"no {kind} named {name!r} is registered.{hint} "
            f"List them all with `vcap list {plural}` (registered: {len(table)})."
        )

    def get_model_class(self, name: str) -> type:
        return self.get("model", name)

    def get_builder_class(self, name: str) -> type:
        return self.get("builder", name)

    def get_processor_class(self, name: str) -> type:
        return self.get("processor", name)

    def get_task_class(self, name: str) -> type:
        return self.get("task", name)

    def get_runner_class(self, name: str) -> type:
        return self.get("runner", name)

    def get_lr_scheduler_class(self, name: str) -> type:
        return self.get("lr_scheduler", name)

    def list(self, kind: str) -> list[str]:
        self.ensure_builtins()
        return sorted(self._maps[kind])

    def items(self, kind: str) -> dict[str, type]:
        """``{name: class}`` of one kind."""
        self.ensure_builtins()
        return dict(self._maps[kind])

    def unregister(self, kind: str, name: str) -> None:
        """Remove a name (for tests that register throwaway classes)."""
        self._maps[kind].pop(name, None)


registry = Registry()
