"""Tunnel and BGP state from swanctl's and birdc's output (strongSwan 5.9, BIRD 2)."""

from __future__ import annotations

from tether.domain.vpnstatus import bgp_problem, bgp_state, tunnel_problem, tunnel_state

LIST_SAS = """\
dc1-t1: #1, ESTABLISHED, IKEv2, 5e8f3c1a2b4d6e7f_i* 0a1b2c3d4e5f6a7b_r
  local  'site-dc1-t1' @ 203.0.113.5[4500]
  remote 'cloud-dc1-t1' @ 198.51.100.10[4500]
  AES_CBC-256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048
  established 12s ago, rekeying in 13932s
  dc1-t1-node: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-256/HMAC_SHA2_256_128
    installed 12s ago, rekeying in 3291s, expires in 3948s
    in  c4a1b2c3,    840 bytes,    10 packets,     1s ago
    out c9d8e7f6,    420 bytes,     5 packets,     1s ago
    local  10.80.1.0/24
    remote 10.226.0.0/16
  dc1-t1-pod: #2, reqid 2, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-256/HMAC_SHA2_256_128
    in  c4a1b2c4,    100 bytes,     1 packets,     1s ago
    out c9d8e7f7,      0 bytes,     0 packets
dc1-t2: #2, CONNECTING, IKEv2, 1111111111111111_i* 0000000000000000_r
"""

PROTOCOLS = """\
BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     10:00:00.000
tether_kernel Kernel  master4    up     10:00:00.000
node_dc1_n1 BGP       ---        up     10:00:01.000  Established
node_dc1_n2 BGP       ---        start  10:00:01.000  Active        Socket: Connection refused
"""


def test_tunnels_are_counted_with_their_bytes() -> None:
    state = tunnel_state(LIST_SAS)
    assert state.as_dict() == {"ikeUp": 1, "childrenUp": 2, "bytesIn": 940, "bytesOut": 420}
    assert tunnel_problem(state, 2, 4) == (
        "1/2 IKE SAs established, 2/4 child SAs installed; not up: dc1-t2"
    )
    assert tunnel_problem(state, 1, 2) is None


def test_bgp_sessions_are_listed_with_their_state() -> None:
    state = bgp_state(PROTOCOLS)
    assert state.sessions == {"node_dc1_n1": "Established", "node_dc1_n2": "Active"}
    assert bgp_problem(state, 2) == "1/2 BGP sessions established; down: node_dc1_n2 Active"
    assert bgp_problem(state, 1) is None
