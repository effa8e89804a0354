"""Load the config dir: every ``*.yaml``/``*.yml`` (sorted by name) parsed with line/column, env-resolved, merged.

The result is a plain ``dict`` (what JSON Schema validates and the snapshot compiles) plus a
location index mapping each JSON pointer to the file:line:column it came from, so every later error
can be located. Problems are collected, never raised one at a time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.error import MarkedYAMLError, YAMLError

from router.errors import ConfigError
from router.yaml_tree import LocMap, LocSeq, TreeReader, YamlNodeError

# Sections whose children are named entries: the same name in two files is an error, not a merge.
NAMED_SECTIONS = frozenset({"providers", "templates", "retry_policies"})

_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Config file names: any letter case, so ``A.YAML`` is never silently skipped.
CONFIG_SUFFIXES = (".yaml", ".yml")
TESTS_DIR = "tests"  # a config dir's test cases (router test): not config, not worth a notice
# A name that mentions YAML but is not a config file: editor backups/swaps (``x.yaml~``,
# ``x.yaml.swp``, ``x.yaml.bak``) and hidden files (``.#x.yaml`` Emacs locks, ConfigMap internals).
_YAMLISH = re.compile(r"\.ya?ml", re.IGNORECASE)
PLACEHOLDER_PREFIX = "placeholder-"
SECRET_FILE_LIMIT = 64 * 1024  # bytes of a ${file:...} value: a key or a service account JSON is a few KiB

Pointer = tuple[str | int, ...]


@dataclass(frozen=True)
class Location:
    file: str
    line: int
    column: int


@dataclass
class LoadedConfig:
    """The merged config, where each value came from, and what was read."""

    data: dict[str, Any]
    locations: dict[Pointer, Location]
    files: list[tuple[str, str]]  # (file name, sha256)
    errors: list[ConfigError] = field(default_factory=list)
    # the unresolved text of every value that used ${...} (variable names and paths, never values),
    # so an empty key can be explained as "set GEMINI_API_KEY"
    sources: dict[Pointer, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # YAML-looking names that are not config files
    source: str = "<config>"  # the config dir: where a problem of the merged whole is reported

    def locate(self, pointer: Pointer, message: str) -> ConfigError:
        """A ConfigError at the nearest located ancestor of ``pointer``."""
        p = tuple(pointer)
        while p and p not in self.locations:
            p = p[:-1]
        loc = self.locations.get(p)
        text = pointer_text(pointer)
        if loc is None:  # a problem of the merged whole (no routes at all...): no one file is to blame
            return ConfigError(self.source, 0, 0, text, message)
        return ConfigError(loc.file, loc.line, loc.column, text, message)


def pointer_text(pointer: Pointer) -> str:
    """RFC 6901 JSON pointer text."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in pointer)


def variables(text: str) -> list[str]:
    """The environment variable names a ``${...}`` text refers to (``${file:...}`` excluded)."""
    names = (m.group(1).partition(":-")[0] for m in _VAR.finditer(text) if not m.group(1).startswith("file:"))
    return [n for n in names if _VAR_NAME.match(n)]


def resolve_env(text: str, env: Mapping[str, str], base_dir: Path | None = None,
                placeholders: bool = False) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}`` and ``${file:PATH}``; raise ValueError when unresolvable.

    A relative ``${file:...}`` path is taken relative to ``base_dir`` (the config dir). With
    ``placeholders`` (``router check --placeholder-secrets``, for CI without the runtime secrets) a
    variable that is unset or empty, with no default or an empty one, becomes ``placeholder-VAR``
    and an unreadable file ``placeholder-file``: non-empty, so keys count as set.
    """

    def one(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr.startswith("file:"):
            path = Path(expr[5:]).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                return _read_secret(path)
            except OSError as e:
                if placeholders:
                    return PLACEHOLDER_PREFIX + "file"
                raise ValueError(f"cannot read ${{file:{path}}}: {e.strerror}") from None
        name, sep, default = expr.partition(":-")
        if not _VAR_NAME.match(name):
            raise ValueError(f"bad variable reference ${{{expr}}}")
        value = env.get(name)
        if placeholders and not value and not default:
            return PLACEHOLDER_PREFIX + name
        if value is None or (sep and value == ""):
            if sep:
                return default
            raise ValueError(f"environment variable {name} is not set (use ${{{name}:-default}})")
        return value

    return _VAR.sub(one, text) if "${" in text else text


def _read_secret(path: Path) -> str:
    """A ``${file:...}`` value: a key, a refresh token, a service account's JSON key; bounded (a path
    pointing at a log or a device must not fill memory), surrounding whitespace stripped."""
    with path.open("rb") as f:
        data = f.read(SECRET_FILE_LIMIT + 1)
    if len(data) > SECRET_FILE_LIMIT:
        raise ValueError(f"${{file:{path}}} is larger than {SECRET_FILE_LIMIT} bytes")
    try:
        return data.decode().strip()
    except UnicodeDecodeError:  # its message would quote a byte of the file
        raise ValueError(f"${{file:{path}}} is not UTF-8 text") from None


class _Reader:
    """Converts one file's ruamel tree into plain data, recording locations and env errors."""

    def __init__(self, file: str, env: Mapping[str, str], locations: dict[Pointer, Location],
                 errors: list[ConfigError], base_dir: Path | None = None, placeholders: bool = False,
                 sources: dict[Pointer, str] | None = None):
        self.file = file
        self.env = env
        self.base_dir = base_dir
        self.locations = locations
        self.errors = errors
        self.placeholders = placeholders
        self.sources = {} if sources is None else sources

    def at(self, pointer: Pointer, lc: tuple[int, int] | None) -> None:
        if lc is not None:
            self.locations[pointer] = Location(self.file, lc[0] + 1, lc[1] + 1)

    def plain(self, node: Any, pointer: Pointer) -> Any:
        if isinstance(node, LocMap):
            out: dict[str, Any] = {}
            for k, v in node.items():
                key = str(k)
                p = pointer + (key,)
                self.at(p, _key_lc(node, k))
                out[key] = self.plain(v, p)
            return out
        if isinstance(node, LocSeq):
            items = []
            for i, v in enumerate(node):
                p = pointer + (i,)
                self.at(p, _item_lc(node, i))
                items.append(self.plain(v, p))
            return items
        if isinstance(node, str):
            text = str(node)
            if "${" in text:
                self.sources[pointer] = text
            try:
                return resolve_env(text, self.env, self.base_dir, self.placeholders)
            except ValueError as e:
                loc = self.locations.get(pointer)
                line, col = (loc.line, loc.column) if loc else (0, 0)
                self.errors.append(ConfigError(self.file, line, col, pointer_text(pointer), str(e)))
                return ""
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return str(node)


def _key_lc(node: LocMap, key: Any) -> tuple[int, int] | None:
    return node.pos.get(key)


def _item_lc(node: LocSeq, i: int) -> tuple[int, int] | None:
    return node.pos[i] if 0 <= i < len(node.pos) else None


def _merge(dst: dict[str, Any], src: LocMap, reader: _Reader, pointer: Pointer,
           owners: dict[Pointer, str]) -> None:
    for k, v in src.items():
        key = str(k)
        p = pointer + (key,)
        lc = _key_lc(src, k)
        # An empty section (all its entries commented out) neither conflicts nor adds anything.
        if v is None and isinstance(dst.get(key), (dict, list)):
            continue
        if key not in dst or (dst[key] is None and isinstance(v, (LocMap, LocSeq))):
            reader.at(p, lc)
            owners[p] = reader.file
            dst[key] = reader.plain(v, p)
            continue
        cur = dst[key]
        named = len(p) == 2 and p[0] in NAMED_SECTIONS
        if isinstance(cur, dict) and isinstance(v, LocMap) and not named:
            _merge(cur, v, reader, p, owners)
        elif isinstance(cur, list) and isinstance(v, LocSeq):
            offset = len(cur)
            for i, item in enumerate(v):
                ip = p + (offset + i,)
                reader.at(ip, _item_lc(v, i))
                cur.append(reader.plain(item, ip))
        else:
            line, col = (lc[0] + 1, lc[1] + 1) if lc else (0, 0)
            what = f"{p[0]} '{key}'" if named else f"'{pointer_text(p)}'"
            reader.errors.append(ConfigError(
                reader.file, line, col, pointer_text(p),
                f"{what} is already defined in {_first_definition(p, reader.locations, owners)}"))


def _first_definition(pointer: Pointer, locations: dict[Pointer, Location], owners: dict[Pointer, str]) -> str:
    """``file:line`` where ``pointer`` was first defined (nested keys come from their ancestor's file)."""
    loc = locations.get(pointer)
    if loc is not None:
        return f"{loc.file}:{loc.line}"
    p = pointer
    while p and p not in owners:
        p = p[:-1]
    return owners.get(p, "?")


def is_config_name(name: str) -> bool:
    """``*.yaml`` and ``*.yml`` in any letter case, except hidden files (editor locks, ConfigMap internals)."""
    return not name.startswith(".") and name.lower().endswith(CONFIG_SUFFIXES)


def config_files(directory: Path) -> tuple[list[Path], list[str]]:
    """The files a config dir contributes, in one merge order by file name, ``*.yaml`` and ``*.yml``
    alike (the visible symlinks of a ConfigMap's ``..data`` dir are followed), and the names that look
    like YAML but are not read (``.x.yaml``, ``x.yaml~``, ``x.yml.bak``), for a notice. A dangling
    symlink or an unreadable file is listed: reading it fails loudly instead of being skipped."""
    entries = list(directory.iterdir())
    files = sorted((p for p in entries if is_config_name(p.name)), key=lambda p: p.name)
    ignored = [p.name for p in entries
               if not is_config_name(p.name) and _YAMLISH.search(p.name) and not p.name.startswith("..")]
    ignored += _in_subdirectories(entries)
    return files, sorted(ignored)


def _in_subdirectories(entries: list[Path]) -> list[str]:
    """``sub/x.yaml`` for YAML files one level down (only the dir itself is read). Hidden dirs (a
    ConfigMap's ``..2024_...`` and ``..data``) hold the files the visible links point at: not listed;
    nor is ``tests/``, where ``router test`` finds the config's test cases."""
    out: list[str] = []
    for sub in entries:
        if sub.name.startswith(".") or sub.name == TESTS_DIR or not sub.is_dir():
            continue
        try:
            names = sorted(p.name for p in sub.iterdir() if is_config_name(p.name))
        except OSError:
            continue
        out += [f"{sub.name}/{n}" for n in names[:20]]
    return out


def _read(path: Path) -> bytes | str:
    """The file's bytes, or why it cannot be read (a FIFO or device would block: refused)."""
    try:
        st = path.stat()
        if stat.S_ISDIR(st.st_mode):
            return "is a directory, not a config file"
        if not stat.S_ISREG(st.st_mode):
            return "is not a regular file"
        return path.read_bytes()
    except OSError as e:  # removed between listing and reading (`git pull`), a dangling link, no permission
        if e.errno == errno.ELOOP:
            return f"cannot read: {e.strerror} (a symlink loop)"
        dangling = path.is_symlink() and not path.exists()
        return f"cannot read: {e.strerror}" + (" (a dangling symlink)" if dangling else "")


def _parse(reader: TreeReader, name: str, raw: bytes) -> Any:
    """The file's located tree, or a located ConfigError."""
    try:
        return reader.read(raw)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return ConfigError(name, line, col, "", f"YAML syntax error: {e.problem or e}")
    except YamlNodeError as e:
        prefix = "YAML syntax error" if str(e).startswith("found duplicate key") else "YAML error"
        return ConfigError(name, e.line, e.column, "", f"{prefix}: {e}")
    except YAMLError as e:
        return ConfigError(name, 0, 0, "", f"YAML error: {e}")


def load_dir(directory: str | Path, env: Mapping[str, str] | None = None, placeholders: bool = False
             ) -> LoadedConfig:
    """Read, resolve and merge every config file in ``directory``. Never raises for config problems.

    ``placeholders``: unset secrets resolve to placeholders (see :func:`resolve_env`).
    """
    directory = Path(directory)
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    locations: dict[Pointer, Location] = {}
    errors: list[ConfigError] = []
    owners: dict[Pointer, str] = {}
    files: list[tuple[str, str]] = []
    sources: dict[Pointer, str] = {}
    try:
        paths, ignored = config_files(directory)
    except OSError as e:
        why = "config directory not found" if not directory.exists() else f"cannot list: {e.strerror}"
        return LoadedConfig(data, locations, files, [ConfigError(str(directory), 0, 0, "", why)])
    if not paths:
        return LoadedConfig(data, locations, files, [ConfigError(
            str(directory), 0, 0, "", f"no config files (*.yaml, *.yml) in {directory}")], ignored=ignored)
    yaml = TreeReader()
    for path in paths:
        raw = _read(path)
        if isinstance(raw, str):
            errors.append(ConfigError(path.name, 0, 0, "", raw))
            continue
        files.append((path.name, hashlib.sha256(raw).hexdigest()))
        tree = _parse(yaml, path.name, raw)
        if isinstance(tree, ConfigError):
            errors.append(tree)
            continue
        if tree is None:
            continue
        if not isinstance(tree, LocMap):
            errors.append(ConfigError(path.name, 1, 1, "", "the top level of a config file must be a mapping"))
            continue
        _merge(data, tree, _Reader(path.name, env, locations, errors, directory, placeholders, sources), (), owners)
    return LoadedConfig(data, locations, files, errors, sources, ignored, str(directory))
