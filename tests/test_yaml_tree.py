"""router.yaml_tree: positions, YAML 1.2 semantics, merge keys, and the pure-parser fallback."""

from __future__ import annotations

import pytest
from ruamel.yaml.error import MarkedYAMLError

from router.yaml_tree import LocMap, TreeReader, YamlNodeError


@pytest.fixture(scope="module")
def reader() -> TreeReader:
    return TreeReader()


def test_positions_of_keys_and_items(reader: TreeReader) -> None:
    tree = reader.read(b"a: 1\nb:\n  - x\n  - {c: 2}\n")
    assert isinstance(tree, LocMap)
    assert tree.pos == {"a": (0, 0), "b": (1, 0)}
    assert tree["b"].pos == [(2, 4), (3, 4)]
    assert tree["b"][1].pos == {"c": (3, 5)}


def test_yaml_1_2_scalars(reader: TreeReader) -> None:
    tree = reader.read(b"on: [429]\nyes: no\noctal: 012\nhex: 0x1F\nf: 1.5\nt: true\nn: ~\n")
    assert tree == {"on": [429], "yes": "no", "octal": 12, "hex": 31, "f": 1.5, "t": True, "n": None}


def test_flow_urls_fall_back_to_the_pure_parser(reader: TreeReader) -> None:
    tree = reader.read(b"p: {base_url: http://x:8080/v1, other: 1}\n")
    assert tree == {"p": {"base_url": "http://x:8080/v1", "other": 1}}


def test_merge_keys_and_anchors(reader: TreeReader) -> None:
    tree = reader.read(b"base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n")
    assert tree["child"] == {"y": 3, "x": 1}


@pytest.mark.parametrize("text,where", [
    (b"a: 1\na: 2\n", (2, 1)), (b"a: !!float x\n", (1, 4)), (b"a: !!set {x}\n", (1, 4)),
    (b"a: &r [*r]\n", None),
], ids=["duplicate", "bad-float", "set", "recursive-alias"])
def test_bad_values_are_located(reader: TreeReader, text: bytes, where: tuple[int, int] | None) -> None:
    with pytest.raises((YamlNodeError, MarkedYAMLError)) as e:
        reader.read(text)
    if where is not None and isinstance(e.value, YamlNodeError):
        assert (e.value.line, e.value.column) == where


def test_alias_expansion_is_bounded(reader: TreeReader) -> None:
    """A "billion laughs" file (aliases of aliases, 9**10 values) stops at MAX_NODES, located,
    instead of taking all memory; the reader is fine for the next file."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefghi", "bcdefghij"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    with pytest.raises(YamlNodeError, match="more than 1,000,000 values in one file") as e:
        reader.read("\n".join(lines).encode())
    assert e.value.line >= 1
    assert reader.read(b"x: [1, 2]") == {"x": [1, 2]}
    wide = b"m:\n" + b"".join(b"  k%d: v\n" % i for i in range(200_000))  # a large real config still loads
    assert len(reader.read(wide)["m"]) == 200_000
