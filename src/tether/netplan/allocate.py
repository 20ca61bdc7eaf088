"""Per-node pod CIDR allocation that does not move existing blocks.

A pool's ``podCIDR`` is cut into ``2 ** (podCIDRMaskPerNode - prefix)`` blocks
("slots"). Each node gets one, decided in three passes:

1. **pinned** — a ``podCIDR`` written on the node in the document is always honoured;
2. **previous** — the block the node had in the previous plan (``allocations.json``)
   is kept when it is still inside the pool, of the right size and free;
3. **allocated** — every other node, in name order, starts at the slot its name hashes
   to (SHA-256) and takes the first free slot from there, wrapping around.

Passes 1 and 2 make allocation stable: adding or removing a node never moves another
node's block, as long as the previous plan is given back (``tether net plan`` reads it
from the output directory). Hashing makes even a first plan independent of the order
nodes are listed in, and keeps most blocks in place when no previous plan exists at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Network

from tether.netplan.addresses import Network


class Source(StrEnum):
    PINNED = "pinned"
    PREVIOUS = "previous"
    ALLOCATED = "allocated"


@dataclass(slots=True)
class Allocation:
    pod_cidr: IPv4Network
    source: Source


def preferred_slot(node_name: str, slots: int) -> int:
    """The slot a node's name hashes to: stable across runs, machines and versions."""
    digest = hashlib.sha256(node_name.encode()).digest()
    return int.from_bytes(digest[:8], "big") % slots


def allocate(
    pod_cidr: IPv4Network,
    mask: int,
    nodes: Sequence[tuple[str, IPv4Network | None]],
    previous: Mapping[str, str] | None = None,
) -> dict[str, Allocation]:
    """Give every node of ``nodes`` (name, pinned block or None) a ``/mask`` block.

    The caller has checked the pool: pinned blocks are inside ``pod_cidr``, of the right
    size and disjoint, and there are at least as many slots as nodes.
    """
    base = int(pod_cidr.network_address)
    shift = 32 - mask
    slots = 1 << (mask - pod_cidr.prefixlen)
    if len(nodes) > slots:
        raise ValueError(f"{len(nodes)} nodes do not fit in {slots} /{mask} blocks of {pod_cidr}")
    taken: set[int] = set()
    result: dict[str, Allocation] = {}

    def block(slot: int) -> IPv4Network:
        return Network((base + (slot << shift), mask))

    for name, pinned in nodes:
        if pinned is not None:
            slot = (int(pinned.network_address) - base) >> shift
            taken.add(slot)
            result[name] = Allocation(block(slot), Source.PINNED)

    rest = [name for name, pinned in nodes if pinned is None]
    if previous:
        for name in rest:
            kept = _previous_slot(previous.get(name), pod_cidr, mask, base, shift)
            if kept is not None and kept not in taken:
                taken.add(kept)
                result[name] = Allocation(block(kept), Source.PREVIOUS)

    for name in sorted(n for n in rest if n not in result):
        slot = preferred_slot(name, slots)
        while slot in taken:
            slot = (slot + 1) % slots
        taken.add(slot)
        result[name] = Allocation(block(slot), Source.ALLOCATED)
    return result


def _previous_slot(
    value: str | None, pod_cidr: IPv4Network, mask: int, base: int, shift: int
) -> int | None:
    if value is None:
        return None
    try:
        net = IPv4Network(value)
    except ValueError:
        return None
    if net.prefixlen != mask or not net.subnet_of(pod_cidr):
        return None
    return (int(net.network_address) - base) >> shift
