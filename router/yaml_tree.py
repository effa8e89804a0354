"""Parse one YAML file into plain dicts/lists that remember where each key and item came from.

ruamel's round-trip loader keeps line/column but is slow (it also collects every comment): a
2,000-rule config took ~700 ms. Here ruamel composes the node tree (with the C parser from
``ruamel.yaml.clib`` when installed, YAML 1.2 resolution either way) and we build the data from the
nodes, taking each position from its node's start mark: ~60 ms for the same config.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_DEPTH = 200  # aliases can nest (or recurse): a bound instead of a stack overflow
# Values one file may build, an alias counting again each time it is used: a "billion laughs" file
# (aliases of aliases) would otherwise expand to billions of values and take all memory. A
# 200,000-rule mapping is ~400,000.
MAX_NODES = 1_000_000


class LocMap(dict[Any, Any]):
    """A mapping whose ``pos[key]`` is the 0-based (line, column) of that key."""

    __slots__ = ("pos",)

    def __init__(self) -> None:
        super().__init__()
        self.pos: dict[Any, tuple[int, int]] = {}


class LocSeq(list[Any]):
    """A sequence whose ``pos[i]`` is the 0-based (line, column) of item ``i``."""

    __slots__ = ("pos",)

    def __init__(self) -> None:
        super().__init__()
        self.pos: list[tuple[int, int]] = []


class YamlNodeError(Exception):
    """A node that cannot become data; ``line``/``column`` are 1-based."""

    def __init__(self, node: Node, message: str):
        super().__init__(message)
        self.line = node.start_mark.line + 1
        self.column = node.start_mark.column + 1


# ruamel's constructor raises plain Python errors for some bad explicit tags (``!!float x``).
_CONSTRUCT_ERRORS = (AttributeError, LookupError, TypeError, ValueError, RecursionError)


class TreeReader:
    """Reusable across files (one per load): ``read(raw)`` → LocMap / LocSeq / scalar / None."""

    def __init__(self) -> None:
        self._yaml = YAML(typ="safe")  # C parser when available; ruamel's YAML 1.2 resolver
        self._pure = YAML(typ="safe", pure=True)
        self._construct = self._yaml.constructor.construct_object
        self._left = MAX_NODES

    def read(self, raw: bytes) -> Any:
        """Raises MarkedYAMLError (syntax) or YamlNodeError (a value that cannot be built).

        libyaml scans YAML 1.1, which refuses some valid 1.2 text (``{url: http://x}``: a ':' in a
        flow plain scalar); whatever it refuses is parsed again by ruamel's pure YAML 1.2 parser,
        whose verdict stands.
        """
        try:
            node = self._yaml.compose(raw)
        except MarkedYAMLError:
            if self._yaml.Parser is self._pure.Parser:
                raise
            node = self._pure.compose(raw)
        self._left = MAX_NODES
        return None if node is None else self._build(node, 0)

    def _build(self, node: Node, depth: int) -> Any:
        self._left -= 1
        if self._left < 0:
            raise YamlNodeError(node, f"more than {MAX_NODES:,} values in one file (an alias counts each "
                                      "time it is used: aliases of aliases?)")
        if depth > MAX_DEPTH:
            raise YamlNodeError(node, f"nesting deeper than {MAX_DEPTH} levels (a recursive alias?)")
        if isinstance(node, MappingNode):
            if node.tag != MAP_TAG:
                raise YamlNodeError(node, f"cannot build this value (unsupported tag {node.tag})")
            return self._mapping(node, depth)
        if isinstance(node, SequenceNode):
            if node.tag != SEQ_TAG:
                raise YamlNodeError(node, f"cannot build this value (unsupported tag {node.tag})")
            seq = LocSeq()
            for item in node.value:
                seq.append(self._build(item, depth + 1))
                seq.pos.append((item.start_mark.line, item.start_mark.column))
            return seq
        try:
            return self._construct(node, deep=True)
        except _CONSTRUCT_ERRORS as e:
            raise YamlNodeError(node, f"cannot build this value ({type(e).__name__}: {e})") from None
        except MarkedYAMLError as e:
            raise YamlNodeError(node, f"cannot build this value ({e.problem or e})") from None

    def _mapping(self, node: MappingNode, depth: int) -> LocMap:
        out = LocMap()
        merges: list[LocMap] = []
        for knode, vnode in node.value:
            if knode.tag == MERGE_TAG:
                merges.extend(self._merge_sources(vnode, depth))
                continue
            if not isinstance(knode, ScalarNode):
                raise YamlNodeError(knode, "cannot build this value (a mapping key must be a scalar)")
            key = self._build(knode, depth + 1)
            if key in out:
                raise YamlNodeError(knode, f'found duplicate key "{key}"')
            out[key] = self._build(vnode, depth + 1)
            out.pos[key] = (knode.start_mark.line, knode.start_mark.column)
        for src in merges:  # YAML merge keys (<<): earlier sources win, explicit keys win over all
            for k, v in src.items():
                if k not in out:
                    out[k] = v
                    out.pos[k] = src.pos[k]
        return out

    def _merge_sources(self, vnode: Node, depth: int) -> list[LocMap]:
        value = self._build(vnode, depth + 1)
        sources = value if isinstance(value, list) else [value]
        if not all(isinstance(s, LocMap) for s in sources):
            raise YamlNodeError(vnode, "cannot build this value (<< needs a mapping or a list of mappings)")
        return sources
