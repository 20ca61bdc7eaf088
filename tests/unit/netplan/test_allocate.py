"""Per-node pod CIDR allocation: pinned, previous, hashed; never moving a block."""

from __future__ import annotations

from ipaddress import IPv4Network

import pytest

from tether.netplan.allocate import Source, allocate, preferred_slot

POD = IPv4Network("10.85.0.0/20")  # 16 /24 blocks


def _nodes(*names: str) -> list[tuple[str, IPv4Network | None]]:
    return [(name, None) for name in names]


def _cidrs(result: dict[str, object]) -> dict[str, str]:
    return {name: str(alloc.pod_cidr) for name, alloc in result.items()}  # type: ignore[attr-defined]


def test_blocks_are_inside_the_pool_disjoint_and_of_the_mask() -> None:
    result = allocate(POD, 24, _nodes(*(f"n{i}" for i in range(16))))
    blocks = [a.pod_cidr for a in result.values()]
    assert len(set(blocks)) == 16
    assert all(b.prefixlen == 24 and b.subnet_of(POD) for b in blocks)


def test_the_same_nodes_in_any_order_get_the_same_blocks() -> None:
    one = allocate(POD, 24, _nodes("a", "b", "c", "d"))
    two = allocate(POD, 24, _nodes("d", "c", "b", "a"))
    assert _cidrs(one) == _cidrs(two)


def test_adding_a_node_moves_no_other_block_given_the_previous_plan() -> None:
    before = _cidrs(allocate(POD, 24, _nodes(*(f"n{i}" for i in range(10)))))
    after = _cidrs(allocate(POD, 24, _nodes(*(f"n{i}" for i in range(12))), previous=before))
    assert {k: after[k] for k in before} == before


def test_removing_a_node_moves_no_other_block_given_the_previous_plan() -> None:
    before = _cidrs(allocate(POD, 24, _nodes(*(f"n{i}" for i in range(12)))))
    remaining = [f"n{i}" for i in range(12) if i not in (0, 5, 7)]
    after = _cidrs(allocate(POD, 24, _nodes(*remaining), previous=before))
    assert after == {k: before[k] for k in remaining}


def test_without_a_previous_plan_uncontended_nodes_keep_their_hashed_block() -> None:
    names = [f"node-{i}" for i in range(3)]
    big = IPv4Network("10.0.0.0/8")  # 65536 /24 slots: collisions are unlikely
    first = _cidrs(allocate(big, 24, _nodes(*names)))
    second = _cidrs(allocate(big, 24, _nodes(*names[:2], "node-new")))
    assert {k: second[k] for k in names[:2]} == {k: first[k] for k in names[:2]}
    for name in names:
        slot = preferred_slot(name, 65536)
        assert first[name] == str(IPv4Network((int(big.network_address) + (slot << 8), 24)))


def test_pinned_blocks_win_and_the_rest_avoid_them() -> None:
    pinned = IPv4Network("10.85.3.0/24")
    nodes = [("pinned", pinned), *_nodes(*(f"n{i}" for i in range(15)))]
    result = allocate(POD, 24, nodes)
    assert result["pinned"].pod_cidr == pinned
    assert result["pinned"].source is Source.PINNED
    assert sum(1 for a in result.values() if a.pod_cidr == pinned) == 1


def test_previous_blocks_that_no_longer_fit_are_reallocated() -> None:
    previous = {
        "a": "10.99.0.0/24",  # outside the pool now
        "b": "10.85.1.0/25",  # wrong size now
        "c": "10.85.2.0/24",  # still fine
        "d": "10.85.2.0/24",  # taken by c
        "e": "garbage",
    }
    result = allocate(POD, 24, _nodes("a", "b", "c", "d", "e"), previous=previous)
    assert result["c"].source is Source.PREVIOUS
    assert str(result["c"].pod_cidr) == "10.85.2.0/24"
    for name in "abde":
        assert result[name].source is Source.ALLOCATED
    assert len({a.pod_cidr for a in result.values()}) == 5


def test_a_previous_block_pinned_to_another_node_is_given_up() -> None:
    result = allocate(
        POD,
        24,
        [("pin", IPv4Network("10.85.4.0/24")), ("old", None)],
        previous={"old": "10.85.4.0/24"},
    )
    assert result["old"].pod_cidr != result["pin"].pod_cidr
    assert result["old"].source is Source.ALLOCATED


def test_a_full_pool_uses_every_block_and_more_nodes_are_refused() -> None:
    tiny = IPv4Network("10.85.0.0/23")
    assert len(allocate(tiny, 24, _nodes("a", "b"))) == 2
    with pytest.raises(ValueError, match="do not fit"):
        allocate(tiny, 24, _nodes("a", "b", "c"))


def test_slash_32_blocks() -> None:
    result = allocate(IPv4Network("10.85.0.0/30"), 32, _nodes("a", "b", "c", "d"))
    assert sorted(str(a.pod_cidr) for a in result.values()) == [
        "10.85.0.0/32",
        "10.85.0.1/32",
        "10.85.0.2/32",
        "10.85.0.3/32",
    ]
