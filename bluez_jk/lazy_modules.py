"""Modules a long-running process imports for a feature it may never use, loaded on first use.

paho-mqtt imports `urllib.request` at the top of its client for one purpose: reading proxy
settings from the environment, and only when PySocks is installed. That import pulls in
`http.client`, `email`, `tempfile`, `bz2` and `lzma`: 1.7 MiB of the gateway's resident memory,
about 5 % of it, on a Pi Zero that also runs everything else.

`defer` puts a stand-in into `sys.modules` that runs the real module the first time anybody
reads an attribute of it, so every user still gets the real thing. The standard library's
`importlib.util.LazyLoader` does not help here: an `import a.b` statement reads
`a.b.__spec__` to see whether the module is still initialising, and that read loads it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    def __getattr__(self, attr: str) -> Any:
        # Only reached for a name the stand-in does not hold: everything but `__name__`,
        # `__spec__` and `__file__` (what the import system and `inspect` read), so
        # `__all__` for a star import loads it as well.
        return getattr(_load(self), attr)


def _load(stand_in: types.ModuleType) -> types.ModuleType:
    name = stand_in.__name__
    if sys.modules.get(name) is stand_in:
        del sys.modules[name]
    real = importlib.import_module(name)  # binds the real module on its package again
    # Whoever bound the stand-in (`import a.b` in paho) sees the real contents from now on.
    vars(stand_in).update(vars(real))
    stand_in.__class__ = types.ModuleType
    return real


def defer(name: str) -> None:
    """Bind `name` (and the attribute on its package) to a stand-in that loads on first use.

    A name already imported, or not installed, is left alone."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec  # `import name` checks `__spec__._initializing`: absent, False
    stand_in.__file__ = spec.origin
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:
        # `import a.b` binds `a`, and `a.b` must then be an attribute of the package.
        setattr(importlib.import_module(parent), child, stand_in)
