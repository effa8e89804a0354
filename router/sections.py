"""What a config section is to the gateway: its schema, its compile step, its cross-reference check and
what the running gateway does when a snapshot holding it is swapped in.

The table of sections itself is ``router.snapshot.SECTIONS``; this module holds the record, the context
a compile step sees, and the swap steps (which act on the state that outlives a snapshot).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from router.access_log import AccessLog
from router.codecs import Stores
from router.config import LoadedConfig
from router.errors import ConfigError
from router.response_store import ResponseStore
from router.signature_memory import SignatureMemory
from router.state_settings import StateSettings
from router.usage import UsageLedger

if TYPE_CHECKING:
    from router.snapshot import Snapshot
    from router.telemetry import Telemetry
    from router.template_sandbox import GuardedEnvironment

T = TypeVar("T")

# A section's cross-reference check: the config and the handler names a route may name.
References = Callable[[LoadedConfig, Collection[str]], list[ConfigError]]


class Live(Protocol):
    """The gateway state that outlives a snapshot, as the swap steps see it."""

    stores: Stores
    access_log: AccessLog
    manage_logging: bool
    usage: UsageLedger
    telemetry: Telemetry

    def use_state(self, settings: StateSettings) -> None: ...  # open, replace or close the shared state


Swap = Callable[[Live, "Snapshot"], None]


class Compiling:
    """One compile in progress: the validated config, what it is compiled for, and the sections
    compiled so far (a step reads the ones before it in the table, e.g. providers read templates)."""

    def __init__(self, data: dict[str, Any], env: GuardedEnvironment, bind_host: str | None,
                 builtins: dict[str, str]):
        self.data = data  # the merged config, valid: each step reads its own key (absent: None)
        self.env = env  # the Jinja environment the templates compile in
        self.bind_host = bind_host  # the address actually listened on, when given on the command line
        self.builtins = builtins  # URLs of built-in upstreams (the simulator) by their config name
        self._done: dict[str, object] = {}

    def add(self, section: Section[T], value: T) -> None:
        self._done[section.name] = value

    def __getitem__(self, section: Section[T]) -> T:
        """A section compiled earlier in the table's order."""
        return cast(T, self._done[section.name])  # stored by add() from the same Section[T]


@dataclass(frozen=True, slots=True)
class Section(Generic[T]):
    """One top-level key of the config."""

    name: str  # the key in routes.d/*.yaml
    schema: str  # its JSON Schema, router/schemas/<schema>
    compile: Callable[[Compiling], T]
    references: References | None = None  # names it uses must exist, its own must be unique
    swap: Swap | None = None  # what the running gateway does when a snapshot with it goes live


def compile_sections(sections: Collection[Section[Any]], done: Compiling) -> Compiling:
    """Every section compiled in table order."""
    for section in sections:
        done.add(section, section.compile(done))
    return done


def reference_errors(sections: Collection[Section[Any]], loaded: LoadedConfig,
                     handlers: Collection[str]) -> list[ConfigError]:
    """Every section's cross-reference problems."""
    return [e for s in sections if s.references is not None for e in s.references(loaded, handlers)]


def swap_in(sections: Collection[Section[Any]], live: Live, snap: Snapshot) -> None:
    """The gateway's long-lived state brought in line with a snapshot that just went live."""
    for section in sections:
        if section.swap is not None:
            section.swap(live, snap)


def use_state(live: Live, snap: Snapshot) -> None:
    """The shared state follows ``state:`` (kept as it is when the section did not change)."""
    live.use_state(snap.state)


def resize_stores(live: Live, snap: Snapshot) -> None:
    """Create, resize or drop the Responses store and the OpenAI Chat signature memory (both follow
    ``server.response_store``); resizing keeps what they hold."""
    items, ttl = snap.server.response_store_items, snap.server.response_store_ttl or None
    stores = live.stores
    if items <= 0:
        stores.responses = stores.signatures = None
        return
    if stores.responses is None:
        stores.responses = ResponseStore(items, ttl)
    else:
        stores.responses.resize(items, ttl)
    if stores.signatures is None:
        stores.signatures = SignatureMemory(items, ttl)
    else:
        stores.signatures.resize(items, ttl)
    stores.responses.remote = stores.signatures.remote = stores.remote  # set by use_state, just before


def apply_logging(live: Live, snap: Snapshot) -> None:
    """``logging.level`` (when the CLI owns process logging) and the access log's format and switch."""
    settings = snap.logging
    if live.manage_logging:
        logging.getLogger().setLevel(settings.level.upper())
    live.access_log.configure(settings.format, settings.access_log and settings.level in ("debug", "info"))


def configure_usage(live: Live, snap: Snapshot) -> None:
    """The usage ledger's bounds follow ``usage:`` (its rows are kept)."""
    live.usage.configure(snap.usage)
