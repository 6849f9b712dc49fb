"""The runtime on a hostile network: only ranks holding the run key join, forged frames and
reports are refused, memory stays bounded behind a slow stage, and an interrupt or the
launcher's death keeps what was measured."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quantpipe_core.runtime.auth import (
    KEY_ENV,
    AuthError,
    Handshake,
    Session,
    load_run_key,
    require_key_or_insecure,
)
from quantpipe_core.runtime.links import INBOX_FRAMES
from tests.test_runtime import RUN_TIMEOUT_S, config, launch, launch_command, ranks_running

ROOT = Path(__file__).resolve().parents[1]
KEY = b"0123456789abcdef0123456789abcdef"


# ---- the key, the handshake and the tags --------------------------------------------------

def test_the_run_key_comes_from_a_file_or_the_environment_never_too_short(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    assert load_run_key(key_file, {}) == KEY  # an editor's trailing newline is not the key
    assert load_run_key(None, {KEY_ENV: KEY.decode()}) == KEY
    assert load_run_key(None, {}) is None
    with pytest.raises(AuthError, match="at least 16 bytes"):
        load_run_key(None, {KEY_ENV: "short"})
    with pytest.raises(AuthError, match=r"--key-file .*missing"):
        load_run_key(tmp_path / "missing", {})


def test_no_key_is_refused_on_a_network_address_unless_insecure():
    require_key_or_insecure(None, "127.0.0.1", insecure=False)
    require_key_or_insecure(None, "localhost", insecure=False)
    require_key_or_insecure(KEY, "192.0.2.7", insecure=False)
    require_key_or_insecure(None, "192.0.2.7", insecure=True)
    with pytest.raises(AuthError, match="--insecure"):
        require_key_or_insecure(None, "192.0.2.7", insecure=False)


def test_the_handshake_admits_the_key_holder_and_refuses_everyone_else():
    rank0, salt = Handshake(KEY), b"s" * 32
    hello = rank0.hello(salt)
    genuine = Handshake(KEY).answer(1, hello)
    assert rank0.check_answer(1, hello, genuine) is None
    assert "could not prove" in rank0.check_answer(1, hello, Handshake(b"x" * 32).answer(1, hello))
    assert "could not prove" in rank0.check_answer(2, hello, genuine)  # not another rank's proof
    assert "has none" in rank0.check_answer(1, hello, Handshake(None).answer(1, hello))
    assert "did not answer" in rank0.check_answer(1, hello, b"")
    # ...and rank 0 proves itself back: a forged rank 0 is refused by the genuine ranks
    proof = rank0.proof_of_rank0(1, hello, genuine)
    assert Handshake(KEY).check_proof(1, hello, genuine, proof) is None
    forged = Handshake(b"y" * 32).proof_of_rank0(1, hello, genuine)
    assert "not this run's rank 0" in Handshake(KEY).check_proof(1, hello, genuine, forged)
    assert "has none" in Handshake(KEY).check_hello(1, Handshake(None).hello(salt))


def test_ranks_with_different_configurations_refuse_each_other_by_name():
    rank0, other = Handshake(KEY, b"a" * 32), Handshake(KEY, b"b" * 32)
    hello = rank0.hello(b"s" * 32)
    assert "another configuration" in other.check_hello(1, hello)
    assert "another configuration" in rank0.check_answer(1, hello, other.answer(1, hello))


def test_tags_bind_the_message_its_fields_and_the_run():
    session = Session(KEY, b"salt of this run")
    tag = session.tag(b"frame", 0, 5, 8, b"payload")
    assert len(tag) == 16 and session.valid(tag, b"frame", 0, 5, 8, b"payload")
    assert session.valid(session.tag(b"ack", 0, 5), b"ack", 0, 5)  # numbers alone
    assert not session.valid(tag, b"frame", 0, 5, 8, b"payloaD")
    assert not session.valid(tag, b"frame", 0, 6, 8, b"payload")  # another microbatch
    assert not session.valid(tag, b"ack", 0, 5, 8, b"payload")
    assert not Session(KEY, b"salt of another run").valid(tag, b"frame", 0, 5, 8, b"payload")
    assert Session(None, b"").tag(b"frame", 0) == b""


@pytest.mark.slow
def test_a_genuine_message_sent_again_is_refused_as_a_replay():
    from quantpipe_core.runtime.channel import Channel, ForgedMessage

    channel = Channel(None, 1, 0, Session(KEY, b"salt"))
    channel.check_order(b"frame", 0)
    channel.check_order(b"frame", 2)  # a gap: frames dropped after the end of a run
    channel.check_order(b"ack", 0)  # each kind of message counts on its own
    with pytest.raises(ForgedMessage, match="replayed or out of order"):
        channel.check_order(b"frame", 2)


# ---- whole runs ------------------------------------------------------------------------------

def rank(cfg: Path, k: int, port: int, out: Path, key: str | None, *extra: str
         ) -> subprocess.Popen:
    env = {k_: v for k_, v in os.environ.items() if k_ != KEY_ENV}
    if key is not None:
        env[KEY_ENV] = key
    return subprocess.Popen(
        [sys.executable, "-m", "quantpipe_core.runtime", "--config", str(cfg), "--rank", str(k),
         "--master-port", str(port), "--out", str(out), "--timeout-s", "10", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def free_port() -> int:
    from quantpipe_core.runtime.launch import free_port as port
    return port()


def finish(*processes: subprocess.Popen) -> list[tuple[int, str]]:
    results = []
    for process in processes:
        try:
            _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
        results.append((process.returncode, stderr))
    return results


@pytest.mark.slow
def test_a_rank_with_the_wrong_key_is_refused_before_any_frame(tmp_path):
    cfg, port = config(tmp_path, 2, "fixed:8"), free_port()
    source = rank(cfg, 0, port, tmp_path / "r0", "the genuine key of this run")
    impostor = rank(cfg, 1, port, tmp_path / "r1", "a key the impostor guessed!")
    (code0, err0), (code1, _) = finish(source, impostor)
    assert code0 == 1 and code1 == 1
    assert "refused stage 1 (dev1): could not prove it holds the run key" in err0
    sink = json.loads((tmp_path / "r1" / "rank1.json").read_text())["sink"]
    assert sink["inputs"] == 0  # not one activation reached it


IMPOSTOR = textwrap.dedent("""
    import sys, datetime, torch, torch.distributed as dist
    from quantpipe_core.models.carry import MAGIC
    timeout = datetime.timedelta(seconds=10)
    store = dist.TCPStore("127.0.0.1", int(sys.argv[1]), 2, False, timeout)
    dist.init_process_group("gloo", store=store, rank=1, world_size=2, timeout=timeout)
    frames = 0
    try:
        for _ in range(3):  # whatever rank 0 sends to its sink
            buffer = torch.zeros(1 << 20, dtype=torch.uint8)
            dist.recv(buffer, src=0)
            frames += MAGIC in buffer.numpy().tobytes()
    except Exception as error:
        print("impostor stopped:", type(error).__name__)
    print("frames received:", frames)
""")


@pytest.mark.slow
def test_a_plain_torch_distributed_process_is_refused_before_any_frame(tmp_path):
    cfg, port = config(tmp_path, 2, "fixed:8"), free_port()
    source = rank(cfg, 0, port, tmp_path / "r0", "the genuine key of this run")
    impostor = subprocess.Popen([sys.executable, "-c", IMPOSTOR, str(port)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, _ = impostor.communicate(timeout=RUN_TIMEOUT_S)
    ((code0, err0),) = finish(source)
    assert "frames received: 0" in out
    assert code0 == 1
    assert "stage 1 (dev1) did not complete the run-key handshake" in err0
    assert json.loads((tmp_path / "r0" / "rank0.json").read_text())["records"]["link_bits"] == []


@pytest.mark.slow
def test_a_network_address_without_a_key_is_refused_at_once(tmp_path):
    cfg = config(tmp_path, 2, "fixed:8")
    process = rank(cfg, 1, 29999, tmp_path / "r1", None, "--master-addr", "192.0.2.7")
    ((code, stderr),) = finish(process)
    assert code == 2
    assert "no run key" in stderr and "--insecure" in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_the_rendezvous_listens_on_the_master_address_only(tmp_path):
    cfg, port = config(tmp_path, 2, "fixed:8"), free_port()
    source = rank(cfg, 0, port, tmp_path / "r0", "the genuine key of this run")
    try:
        deadline, listening = time.monotonic() + 30, []
        while not listening and time.monotonic() < deadline:
            time.sleep(0.2)
            listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True,
                                       text=True).stdout.split("\n")
            listening = [line.split()[3] for line in listening if line.strip()]
        assert listening == [f"127.0.0.1:{port}"]
    finally:
        source.kill()
        source.communicate()


@pytest.mark.slow
def test_a_forged_frame_is_refused_by_its_tag(tmp_path):
    out = tmp_path / "out"
    done = launch(config(tmp_path, 2, "fixed:8"), out, "--fault", "0:forge:5")
    assert done.returncode == 1
    assert ("stage 1 (dev1): frame for microbatch 5 on link 0 fails its authentication tag"
            in done.stderr)
    assert "Traceback" not in done.stderr
    result = json.loads((out / "summary.json").read_text())
    # what the sink finished before the forgery arrived is kept; the frames still in its inbox
    # (INBOX_FRAMES) when the receiver refused frame 5 are dropped with the run
    assert (5 - INBOX_FRAMES - 1) * 8 <= result["items_completed"] <= 5 * 8


@pytest.mark.slow
def test_a_slow_sink_slows_its_sender_and_is_waited_for_at_the_end(tmp_path):
    """The sink takes 2 s per microbatch and the timeout is 4 s. Its inbox holds two frames, so
    the sender's acks wait and its measured rate drops (frames queue on the sender, within
    `OUTBOX_BYTES`); and rank 0 waits for the sink's last ~6 s of work (its heartbeat goes on)
    instead of timing out."""
    out, cfg = tmp_path / "out", config(tmp_path, 2, "fixed:8")
    cfg.write_text(cfg.read_text().replace('mode = "open"', 'mode = "open"\ntarget_rate = 16'))
    done = launch(cfg, out, "--microbatches", "10", "--fault", "1:slow:2000", "--timeout-s", "4")
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "summary.json").read_text())["items_completed"] == 10 * 8
    records = json.loads((out / "rank0.json").read_text())["records"]
    assert records["windows"][2]["measured_mbps"] < 1.0  # window 1's frames waited for room


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.slow
def test_an_interrupt_keeps_every_ranks_measurements(tmp_path, signum):
    out = tmp_path / "out"
    launcher = subprocess.Popen(
        launch_command(config(tmp_path, 3, "fixed:8"), out, "--duration", "60"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        started = wait_for_ranks(out, 3)
        time.sleep(3)
        launcher.send_signal(signum)
        _, stderr = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert started and launcher.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    for k in range(3):
        assert "interrupted at t = " in json.loads((out / f"rank{k}.json").read_text())["error"]
    result = json.loads((out / "summary.json").read_text())
    assert result["items_completed"] > 0
    assert any(note.startswith("interrupted at t = ") for note in result["notes"])
    assert not ranks_running(out)


@pytest.mark.slow
def test_ranks_die_with_a_killed_launcher_and_save_their_reports(tmp_path):
    out = tmp_path / "out"
    launcher = subprocess.Popen(
        launch_command(config(tmp_path, 2, "fixed:8"), out, "--duration", "60"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for_ranks(out, 2)
        time.sleep(2)
        launcher.kill()  # SIGKILL: the launcher cannot stop anyone
        launcher.wait()
        deadline = time.monotonic() + 20
        while ranks_running(out) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for pid in ranks_running(out):
            os.kill(pid, signal.SIGKILL)
    assert not ranks_running(out)
    for k in range(2):
        assert "interrupted" in json.loads((out / f"rank{k}.json").read_text())["error"]


def wait_for_ranks(out: Path, count: int) -> bool:
    """True once `count` ranks run and rank 0's clock has started (the group has formed)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(ranks_running(out)) >= count and (out / "clock.json").exists():
            return True
        time.sleep(0.2)
    return False
