"""Emulation part 1: the Mininet chain, htb shaping, in-place trace replay, clean-up.

The Mininet tests need root (`require_root`: skipped outside CI, failed in CI without it); the
schedule tests run anywhere. Throughput is measured by a Python socket pair run in the hosts.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from emulation.replay import (
    MIN_BIN_S,
    HtbClass,
    Replayer,
    changes,
    replay_trace,
    replayable_mbps,
)
from quantpipe_core.config import LinkConfig
from quantpipe_core.trace import Trace

ROOT = Path(__file__).resolve().parents[1]
PORT = 5901
TEST_TIMEOUT_S = 30

# Receiver: accept one connection, read until EOF/quiet, print (monotonic time, bytes) samples.
RECEIVER = textwrap.dedent("""
    import json, socket, sys, time
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", int(sys.argv[1])))
    server.listen(1)
    print("ready", flush=True)
    server.settimeout(10)
    conn, _ = server.accept()
    conn.settimeout(2)
    total, samples, last = 0, [[time.monotonic(), 0]], 0.0
    while True:
        try:
            data = conn.recv(1 << 16)
        except socket.timeout:
            break
        if not data:
            break
        total += len(data)
        now = time.monotonic()
        if now - last >= 0.02:
            samples.append([now, total])
            last = now
    samples.append([time.monotonic(), total])
    print(json.dumps(samples), flush=True)
""")
# Sender: connect and send as fast as the link allows for argv[2] seconds.
SENDER = textwrap.dedent("""
    import socket, sys, time
    sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    chunk, end = b"x" * 65536, time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        sock.sendall(chunk)
    sock.close()
""")
# TCP "ping": connect to argv[1]:argv[2], print ok.
CONNECT = (
    "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); print('ok')"
)


def _transfer(src, dst, dst_addr: str, seconds: float) -> list[tuple[float, int]]:
    """Send for ``seconds`` from host ``src`` to ``dst``; the receiver's (time, bytes) samples."""
    receiver = dst.popen([sys.executable, "-c", RECEIVER, str(PORT)], text=True)
    try:
        assert receiver.stdout.readline().strip() == "ready"
        sender = src.popen([sys.executable, "-c", SENDER, dst_addr, str(PORT), str(seconds)])
        sender.wait(timeout=seconds + 15)
        out, _ = receiver.communicate(timeout=15)
    finally:
        for proc in (receiver, locals().get("sender")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    return [(t, b) for t, b in json.loads(out.strip().splitlines()[-1])]


def _mbps(samples: list[tuple[float, int]], t0: float, t1: float) -> float:
    """Mean received rate over [t0, t1] (monotonic seconds), from the nearest samples."""
    inside = [(t, b) for t, b in samples if t0 <= t <= t1]
    (ta, ba), (tb, bb) = inside[0], inside[-1]
    return (bb - ba) * 8 / (tb - ta) / 1e6


def _assert_clean() -> None:
    from emulation.cleanup import leftovers

    assert leftovers() == {"netns": [], "veths": [], "processes": []}


def _timed_out(signum, frame):
    raise TimeoutError(f"test took more than {TEST_TIMEOUT_S} s")


@pytest.fixture
def root_net():
    """A hard SIGALRM time limit (raised in the test, so its clean-up runs); and
    nothing left behind afterwards."""
    previous = signal.signal(signal.SIGALRM, _timed_out)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    _assert_clean()


# ---- schedule (no root) ----

def test_changes_loop_and_hold():
    trace = Trace.from_segments([0.0, 1.0], [10.0, 5.0], 2.0, end="loop")
    looped = changes(trace)
    assert [next(looped) for _ in range(5)] == [
        (0.0, 10.0), (1.0, 5.0), (2.0, 10.0), (3.0, 5.0), (4.0, 10.0)]
    held = Trace.from_segments([0.0, 1.0], [10.0, 5.0], 2.0, hold_mbps=7.0, end="hold")
    assert list(changes(held)) == [(0.0, 10.0), (1.0, 5.0), (2.0, 7.0)]


def test_replay_trace_bins_fast_traces(tmp_path):
    fast = tmp_path / "fast.csv"
    fast.write_text("time_s,mbps\n" + "".join(f"{i * 0.01:.2f},{1 + i % 2}\n" for i in range(101)))
    trace = replay_trace(LinkConfig(), fast)
    starts = [*trace.starts_s, trace.duration_s]
    assert min(b - a for a, b in itertools.pairwise(starts)) >= MIN_BIN_S - 1e-9
    slow = tmp_path / "slow.csv"
    slow.write_text("time_s,mbps\n0,10\n0.5,5\n2,5\n")
    assert replay_trace(LinkConfig(), slow).segments() == [(0.0, 10.0), (0.5, 5.0)]


class _SlowLink:
    """A stand-in link whose rate change costs 30 ms, like a slow tc call."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def set_rate(self, mbps: float) -> None:
        time.sleep(0.03)
        self.rates.append(mbps)


def test_replayer_keeps_to_wall_clock():
    # 0.1 s segments on two links for 1.5 s: 30 changes of 30 ms each, 2 per 0.1 s
    traces = [
        Trace.from_segments([i * 0.1 for i in range(10)], [1.0 + i for i in range(10)], 1.0)
        for _ in range(2)
    ]
    links = [_SlowLink(), _SlowLink()]
    replayer = Replayer(links, traces, duration_s=1.5)
    replayer.start()
    replayer.join(timeout=10)
    assert not replayer.is_alive() and replayer.error is None
    assert len(replayer.applied) == 30
    late = [a.began_s - a.due_s for a in replayer.applied]
    assert max(late) < 0.05 and min(late) >= 0  # no drift builds up over the 30 changes
    assert links[0].rates[:12] == [1.0 + i for i in range(10)] + [1.0, 2.0]


# ---- Mininet (root) ----

@pytest.mark.slow
@pytest.mark.root("Mininet")
def test_chain_comes_up_and_routes_to_rank0(root_net):
    from emulation.topology import chain

    with chain(4, [20.0, 20.0, 20.0]) as net:
        hosts = net.hosts
        assert len(hosts) == 4 and len(net.links) == 3
        assert [link.intf for link in net.links] == ["h0-eth0", "h1-eth1", "h2-eth1"]
        for target in range(4):
            server = hosts[target].popen(
                [sys.executable, "-c",
                 "import socket,sys; s=socket.socket(); s.bind(('0.0.0.0', int(sys.argv[1])));"
                 "s.listen(8); print('ready', flush=True)\n"
                 "for _ in range(3): s.accept()[0].close()", str(PORT + target)], text=True)
            try:
                assert server.stdout.readline().strip() == "ready"
                for source in range(4):
                    if source == target:
                        continue
                    out = hosts[source].popen(
                        [sys.executable, "-c", CONNECT, net.addr(target), str(PORT + target)],
                        stdout=subprocess.PIPE, text=True,
                    ).communicate(timeout=10)[0]
                    assert out.strip() == "ok", (source, target)
                server.wait(timeout=10)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()


@pytest.mark.slow
@pytest.mark.root("Mininet")
def test_shaped_link_throughput(root_net):
    from emulation.topology import chain

    with chain(2, [8.0]) as net:
        h0, h1 = net.hosts
        samples = _transfer(h0, h1, net.addr(1), 4.0)
        start = samples[0][0]
        rate = _mbps(samples, start + 1.0, start + 4.0)
        print(f"measured {rate:.2f} Mbit/s on an 8 Mbit/s link")
        assert rate == pytest.approx(8.0, rel=0.2)


@pytest.mark.slow
@pytest.mark.root("Mininet")
def test_replayer_changes_rate_in_place(root_net, tmp_path):
    from emulation.topology import chain

    step = tmp_path / "step.csv"
    step.write_text("time_s,mbps\n0,20\n2.5,5\n5,5\n")
    trace = replay_trace(LinkConfig(end="hold"), step)
    with chain(2, [20.0]) as net:
        link = net.links[0]
        htb = HtbClass.find(link.pid, link.intf)
        assert (htb.parent, htb.classid) == ("5:", "5:1")
        qdisc_before = _tc(htb, "qdisc")
        h0, h1 = net.hosts
        receiver_start = time.monotonic()
        replayer = Replayer([htb], [trace], start=receiver_start + 0.3)
        replayer.start()
        try:
            samples = _transfer(h0, h1, net.addr(1), 5.0)
        finally:
            replayer.stop()
        assert replayer.error is None
        start = replayer.start_s
        before = _mbps(samples, start + 1.0, start + 2.4)
        after = _mbps(samples, start + 2.8, start + 4.8)
        print(f"before the step {before:.2f} Mbit/s (20), after {after:.2f} (5)")
        assert before == pytest.approx(20.0, rel=0.2)
        assert after == pytest.approx(5.0, rel=0.2)
        due = [(a.due_s, a.mbps) for a in replayer.applied]
        assert due[:2] == [(0.0, 20.0), (2.5, 5.0)]
        lateness = [a.began_s - a.due_s for a in replayer.applied]
        print(f"changes began {[f'{x * 1e3:.1f}' for x in lateness]} ms late, "
              f"tc took {[f'{(a.done_s - a.began_s) * 1e3:.1f}' for a in replayer.applied]} ms")
        assert max(lateness) < 0.05
        qdisc_after = _tc(htb, "qdisc")
        # same qdisc (handle), never re-created: its byte counter kept counting through the step
        assert qdisc_after[0] == qdisc_before[0]
        assert qdisc_after[1] > qdisc_before[1] + 5e6 * 2.0 / 8
        assert " rate 5Mbit ceil 5Mbit" in _tc(htb, "class")[2]


@pytest.mark.slow
@pytest.mark.root("Mininet")
def test_a_rate_of_zero_is_replayed_as_an_outage(root_net):
    """htb has no rate 0 (``tc``: "rate" is required): a trace's 0 Mbit/s (``floor_mbps = 0``)
    becomes htb's smallest rate, 8 bit/s, and the link comes back after it."""
    from emulation.topology import chain

    with chain(2, [replayable_mbps(0.0)]) as net:
        link = net.links[0]
        htb = HtbClass.find(link.pid, link.intf)
        htb.set_rate(0.0)
        assert " rate 8bit ceil 8bit" in _tc(htb, "class")[2]
        htb.set_rate(5.0)
        assert " rate 5Mbit ceil 5Mbit" in _tc(htb, "class")[2]


def _tc(htb: HtbClass, what: str) -> tuple[str, int, str]:
    """(first line, bytes sent, full text) of ``tc -s what show dev intf`` in the link's host."""
    from emulation.replay import in_host

    text = in_host(htb.pid, "tc", "-s", what, "show", "dev", htb.intf).stdout
    sent = int(text.split("Sent ")[1].split()[0])
    first = text.splitlines()[0]
    return first.split(" refcnt")[0] if what == "qdisc" else first, sent, text


@pytest.mark.slow
@pytest.mark.root("Mininet")
def test_cleanup_after_error_and_sigint(root_net):
    from emulation.topology import chain

    with pytest.raises(RuntimeError, match="boom"), chain(2, [10.0]):
        raise RuntimeError("boom")
    _assert_clean()
    # a run killed by Ctrl-C (SIGINT) and one by SIGTERM both leave nothing behind
    script = (
        "import time\nfrom emulation.topology import chain\n"
        "with chain(3, [10.0, 10.0]):\n    print('up', flush=True)\n    time.sleep(60)\n"
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        run = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert run.stdout.readline().strip() == "up"
            run.send_signal(sig)
            run.wait(timeout=20)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        _assert_clean()


@pytest.mark.slow
@pytest.mark.root("Mininet")
def test_cleanup_touches_nothing_but_mininet_state(root_net):
    from emulation.cleanup import guarded

    canary = Path("/tmp") / f"quantpipe-canary-{time.time_ns()}.log"  # `mn -c` would delete it
    canary.write_text("not Mininet's\n")
    try:
        with guarded():
            pass
        assert canary.read_text() == "not Mininet's\n"
    finally:
        canary.unlink(missing_ok=True)
