"""A Mininet chain of hosts, one per runtime rank, with htb-shaped links between neighbours.

Host ``h{k}`` runs rank ``k``. Link ``k`` joins ``h{k}`` and ``h{k+1}`` directly by a veth pair
(no switch, so no Open vSwitch and no controller) on subnet ``10.0.{k}.0/24``: ``h{k}`` is
``10.0.{k}.1`` and ``h{k+1}`` is ``10.0.{k}.2``. Its sending side (``h{k}``'s end) is shaped by
Mininet's ``TCLink`` with htb (``bw=`` in Mbit/s); the reverse direction (ACKs) is not shaped.
Every host forwards IP and has routes along the chain, so every rank reaches every other one, in
particular rank 0's rendezvous. Delay needs netem, which this kernel lacks: it is off by default.

    with chain(3, [10.0, 5.0]) as net:
        net.hosts[2].cmd("ping -c1", net.addr(0))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

HTB_BURST = "15k"  # what Mininet's TCIntf uses; a rate change keeps it


@dataclass(frozen=True)
class ShapedLink:
    """The shaped (sending) end of link ``index``: host ``h{index}``, its interface ``intf``."""

    index: int
    host: object  # mininet.node.Host
    intf: str
    mbps: float

    @property
    def pid(self) -> int:
        return self.host.pid  # type: ignore[attr-defined]


class ChainNet:
    """A started Mininet chain; `stop` (or leaving `chain`'s ``with``) tears it down."""

    def __init__(self, net, links: list[ShapedLink]) -> None:
        self.net = net
        self.links = links

    @property
    def hosts(self) -> list:
        return [self.net.get(f"h{k}") for k in range(len(self.net.hosts))]

    def addr(self, rank: int) -> str:
        """The address other ranks use for ``rank`` (rank 0: ``10.0.0.1``, the rendezvous)."""
        return f"10.0.{rank}.1" if rank < len(self.links) else f"10.0.{rank - 1}.2"

    def ifname(self, rank: int) -> str:
        """The interface of ``rank`` that carries ``addr(rank)`` (for ``GLOO_SOCKET_IFNAME``)."""
        return _intf(rank, toward_next=rank < len(self.links))

    def stop(self) -> None:
        self.net.stop()


def _intf(rank: int, toward_next: bool) -> str:
    # h0 has only eth0 (toward h1); h{k>0} has eth0 toward h{k-1} and eth1 toward h{k+1}
    if rank == 0:
        return "h0-eth0"
    return f"h{rank}-eth{1 if toward_next else 0}"


def build(n_hosts: int, mbps: Sequence[float], delay_ms: float | None = None) -> ChainNet:
    """Build and start the chain; ``mbps[k]`` is link k's starting rate (``n_hosts - 1`` links)."""
    from mininet.link import TCLink
    from mininet.net import Mininet
    from mininet.topo import Topo

    if n_hosts < 2:
        raise ValueError(f"a pipeline needs at least 2 hosts, got {n_hosts}")
    if len(mbps) != n_hosts - 1:
        raise ValueError(f"{n_hosts} hosts need {n_hosts - 1} link rates, got {len(mbps)}")
    if any(rate <= 0 for rate in mbps):
        raise ValueError(f"link rates must be > 0 Mbit/s, got {list(mbps)}")

    topo = Topo()
    for k in range(n_hosts):
        topo.addHost(f"h{k}", ip=None)
    for k, rate in enumerate(mbps):
        params1: dict = {"bw": float(rate), "ip": f"10.0.{k}.1/24"}
        if delay_ms:  # needs netem (sch_netem), absent from this kernel
            params1["delay"] = f"{delay_ms}ms"
        topo.addLink(
            f"h{k}", f"h{k + 1}", cls=TCLink,
            intfName1=_intf(k, True), intfName2=_intf(k + 1, False),
            params1=params1, params2={"ip": f"10.0.{k}.2/24"},
        )
    net = Mininet(topo=topo, controller=None, link=TCLink, autoSetMacs=True, build=False)
    try:
        net.build()
        net.start()
        links = []
        for k, rate in enumerate(mbps):
            host = net.get(f"h{k}")
            links.append(ShapedLink(k, host, _intf(k, True), float(rate)))
        _route(net, n_hosts)
        return ChainNet(net, links)
    except BaseException:
        net.stop()
        raise


def _route(net, n_hosts: int) -> None:
    """IP forwarding on every host, and a route to every non-adjacent subnet along the chain."""
    for rank in range(n_hosts):
        host = net.get(f"h{rank}")
        host.cmd("sysctl -qw net.ipv4.ip_forward=1")
        for intf in host.intfNames():  # Mininet leaves a host's 2nd address-less side down
            host.cmd(f"ip link set {intf} up")
        for subnet in range(n_hosts - 1):
            if subnet > rank:  # beyond my outgoing link: via the next host
                host.cmd(f"ip route replace 10.0.{subnet}.0/24 via 10.0.{rank}.2")
            elif subnet < rank - 1:  # before my incoming link: via the previous host
                host.cmd(f"ip route replace 10.0.{subnet}.0/24 via 10.0.{rank - 1}.1")


@contextlib.contextmanager
def chain(n_hosts: int, mbps: Sequence[float], delay_ms: float | None = None) -> Iterator[ChainNet]:
    """`build` inside `cleanup.guarded`: stale state is removed first, everything after."""
    from emulation.cleanup import guarded

    with guarded():
        net = build(n_hosts, mbps, delay_ms)
        try:
            yield net
        finally:
            net.stop()
