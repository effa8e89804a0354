"""The optional compiled speedups (``router/_speedups.c``): the per-request arithmetic of a client key
with limits and budgets, the same functions as ``router.limit_cells``, ``router.budget_cells``,
``router.limit_headers`` and ``router.token_estimate`` with the same results.

Built by ``pip install`` when a C compiler is there (the extension is optional: without one the
pure-Python modules serve, only slower); ``ROUTER_NO_EXTENSIONS=1`` turns it off.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

OFF = "ROUTER_NO_EXTENSIONS"


def compiled() -> ModuleType | None:
    """The compiled module, or None (not built, or turned off by ``ROUTER_NO_EXTENSIONS``)."""
    if os.environ.get(OFF, "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("router._speedups")
    except ImportError:
        return None
