"""The real runtime on loopback: separate processes per stage over gloo, compared with the model
run in one process, the accuracy profile, the simulator's file layout, and faults."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from quantpipe_core.models import load_model
from quantpipe_core.profiles import shipped_accuracy_profile
from quantpipe_core.quant import DEFAULT
from quantpipe_core.results import Records, RunInfo, summary, timeline_rows
from quantpipe_core.tasks import task_for

pytestmark = pytest.mark.slow  # every test here runs real ranks in processes

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 60  # hard bound on one launch; a healthy run takes about 5 s
WINDOW_COLUMNS = ["link", "window_index", "t_start_s", "t_end_s", "bits", "measured_mbps",
                  "trace_mbps", "delivered_items_per_s"]


def config(tmp_path: Path, stages: int, policy: str, mode: str = "open",
           target_rate: float | None = None) -> Path:
    devices = "".join(f'[[devices]]\nname = "dev{k}"\n' for k in range(stages))
    target = "" if target_rate is None else f"target_rate = {target_rate}\n"
    path = tmp_path / "cfg.toml"
    path.write_text(
        f'[model]\nname = "digits-vit"\nmicrobatch = 8\n[policy]\nname = "{policy}"\n'
        f'window = 4\n[source]\nmode = "{mode}"\n{target}{devices}'
    )
    return path


def launch_command(cfg: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "quantpipe_core.runtime.launch", "--config", str(cfg),
            "--out", str(out), "--timeout-s", "5", *extra]


def launch(cfg: Path, out: Path, *extra: str, pythonpath: Path | None = None
           ) -> subprocess.CompletedProcess:
    """The launcher run to its end; `pythonpath` where a user's policy module is."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    return subprocess.run(launch_command(cfg, out, *extra), cwd=ROOT, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, env=env)


def header(path: Path) -> list[str]:
    with path.open() as f:
        return next(csv.reader(f))


@pytest.fixture(scope="module")
def reference() -> list[list[int]]:
    """Predictions of the unpartitioned model, run in this process, per microbatch."""
    model = load_model("digits-vit")
    task = task_for(model, 8)
    with torch.no_grad():
        return [model(mb).argmax(1).tolist() for mb in task.microbatches]


@pytest.mark.parametrize("stages", [2, 3])
def test_float32_links_give_the_unpartitioned_predictions(tmp_path, reference, stages):
    out = tmp_path / "out"
    done = launch(config(tmp_path, stages, "fixed:32", mode="closed"), out)
    assert done.returncode == 0, done.stderr
    sink = json.loads((out / f"rank{stages - 1}.json").read_text())["sink"]
    predictions = [sink["predictions"][str(k)] for k in range(len(reference))]
    assert predictions == reference
    result = json.loads((out / "summary.json").read_text())
    assert result["items_completed"] == sum(map(len, reference))  # the last one holds 7
    assert result["mean_bits"] == 32.0
    assert result["run"]["ranks_reported"] == list(range(stages))
    assert len(result["run"]["cuts"]) == stages - 1
    # the simulator's files, columns and keys
    expected_timeline = list(timeline_rows(Records(t_source={0: 0.0}), stages)[0])
    assert header(out / "timeline.csv") == expected_timeline
    assert header(out / "windows.csv") == WINDOW_COLUMNS
    assert (out / "plot.png").stat().st_size > 0
    keys = set(summary(Records(), RunInfo(stages, 8, 1.0, 1.0))) | {"notes"}
    assert set(result) == keys
    rows = list(csv.DictReader((out / "windows.csv").open()))
    assert {int(r["link"]) for r in rows} == set(range(stages - 1))
    # a window may open before the ack of its predecessor's first frame is counted (threads)
    later = [r["measured_mbps"] for r in rows if int(r["window_index"]) > 0]
    measured = [float(v) for v in later if v]
    assert len(measured) >= len(later) - (stages - 1) and all(v > 0 for v in measured)


def test_eight_bit_link_matches_the_accuracy_profile(tmp_path):
    out = tmp_path / "out"
    done = launch(config(tmp_path, 2, "fixed:8"), out)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "summary.json").read_text())
    (cut,) = result["run"]["cuts"]
    profile = shipped_accuracy_profile("digits-vit")
    expected = profile.value(cut, DEFAULT.label, 8)  # the config's default codec
    assert result["mean_bits"] == 8.0
    assert abs(result["measured_accuracy"] - expected) <= 0.02
    assert result["links"][0]["bytes"] < 3_200_000 / 3  # 8-bit frames, not float32


def test_a_text_model_and_a_users_policy_run_on_real_links(tmp_path):
    (tmp_path / "always16.py").write_text(
        "class Always16:\n"
        "    def decide(self, obs):\n"
        "        return [16] * obs.window_len\n"
    )
    cfg = tmp_path / "text.toml"
    cfg.write_text(
        '[model]\nname = "minilm"\nmicrobatch = 8\n[policy]\nname = "always16:Always16"\n'
        'window = 4\n[source]\nmode = "closed"\n[[devices]]\nname = "a"\n'
        '[[devices]]\nname = "b"\n'
    )
    out = tmp_path / "out"
    done = launch(cfg, out, "--timeout-s", "10", "--microbatches", "24", pythonpath=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "summary.json").read_text())
    assert result["mean_bits"] == 16.0 and result["items_completed"] == 8 * 24
    assert result["measured_accuracy"] >= 0.99  # 16-bit links: the embeddings barely move


def test_a_lossless_link_sends_fewer_bytes_for_the_same_predictions_and_expects_them(tmp_path):
    """With ``lossless = "zstd"`` the frames shrink, the decoded values (so the predictions) do
    not change, and the policy sees expected sizes within a tenth of those sent, with the
    bit-planes' size as the exact worst case."""
    seen = tmp_path / "seen.jsonl"
    (tmp_path / "watch.py").write_text(
        "import json\n"
        "class Watch:\n"
        "    def decide(self, obs):\n"
        f"        with open({str(seen)!r}, 'a') as f:\n"
        "            sizes = [obs.packet_bytes[4], obs.worst_packet_bytes[4]]\n"
        "            f.write(json.dumps(sizes) + '\\n')\n"
        "        return [4] * obs.window_len\n"
    )
    results = {}
    for coder in ("none", "zstd"):
        cfg = config(tmp_path, 2, "watch:Watch", mode="closed")
        cfg.write_text(cfg.read_text() + f'[quant]\nlossless = "{coder}"\n')
        seen.unlink(missing_ok=True)
        out = tmp_path / coder
        done = launch(cfg, out, "--microbatches", "64", pythonpath=tmp_path)
        assert done.returncode == 0, done.stderr
        sink = json.loads((out / "rank1.json").read_text())["sink"]
        summary_ = json.loads((out / "summary.json").read_text())
        per_microbatch = summary_["links"][0]["bytes"] / 64
        results[coder] = (sink["predictions"], per_microbatch,
                          [json.loads(line) for line in seen.read_text().splitlines()])
    plain, coded = results["none"], results["zstd"]
    assert coded[0] == plain[0]  # the same values decoded, so the same predictions
    assert coded[1] < 0.95 * plain[1]
    assert all(worst == plain[1] for _, worst in coded[2])  # bit-planes: the exact bound
    assert all(expected == plain[1] for expected, _ in plain[2])  # exact without a coder
    later = [expected for expected, _ in coded[2][2:]]
    assert all(abs(expected - coded[1]) <= 0.10 * coded[1] for expected in later), later


def test_a_policy_turns_the_coder_off_for_a_window_on_real_links(tmp_path):
    """A ``code`` answer of False sends that window's frames as bit-planes (the header says
    so and the receiver decodes them), True sends them coded: the same run mixes both."""
    (tmp_path / "alternate.py").write_text(
        "class Alternate:\n"
        "    def decide(self, obs):\n"
        "        self.window = obs.window_index\n"
        "        return [4] * obs.window_len\n"
        "    def code(self, obs, bits):\n"
        "        return self.window % 2 == 0\n"
    )
    cfg = config(tmp_path, 2, "alternate:Alternate", mode="closed")
    cfg.write_text(cfg.read_text() + '[quant]\nlossless = "zstd"\n')
    out = tmp_path / "out"
    done = launch(cfg, out, "--microbatches", "32", pythonpath=tmp_path)
    assert done.returncode == 0, done.stderr
    sender = json.loads((out / "rank0.json").read_text())["records"]
    coded = {w["window_index"]: w["coded"] for w in sender["windows"]}
    assert [coded[i] for i in range(8)] == [True, False] * 4
    sizes = {mb: n for mb, _, n in sender["link_bytes"]}
    plain = {sizes[mb] for mb in sizes if not coded[mb // 4]}
    assert len(plain) == 1  # bit-planes: the exact size, every frame alike
    assert all(sizes[mb] < 0.95 * min(plain) for mb in sizes if coded[mb // 4])
    summary_ = json.loads((out / "summary.json").read_text())
    assert summary_["links"][0]["coded_window_share"] == 0.5
    assert summary_["items_completed"] == 8 * 32  # every frame decoded, coded or not


def test_an_image_model_without_labelled_data_gets_random_images_scored_by_nothing(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    from quantpipe_core.tasks import RandomImages, inputs_for

    folder = tmp_path / "rgb-vit"
    ViTForImageClassification(ViTConfig(
        image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
    )).eval().save_pretrained(folder)
    model = load_model(str(folder))
    inputs = inputs_for(model, 4)
    assert isinstance(inputs, RandomImages) and inputs.metric is None
    assert inputs.microbatches[0]["pixels"].shape == (4, 3, 16, 16)
    assert torch.equal(inputs.microbatches[1]["pixels"],
                       inputs_for(model, 4).microbatches[1]["pixels"])  # seeded
    sink = inputs.running_score()
    for k, microbatch in enumerate(inputs.microbatches):
        with torch.no_grad():
            sink.add(k, model(microbatch))
    assert sink.result() == {"metric": None, "measured_accuracy": None, "inputs": 32}
    assert isinstance(inputs_for(load_model("digits-vit"), 4), type(task_for(
        load_model("digits-vit"), 4)))


def test_corrupt_frame_ends_the_run_naming_the_stage(tmp_path):
    out = tmp_path / "out"
    done = launch(config(tmp_path, 2, "fixed:8"), out, "--fault", "0:corrupt:5")
    assert done.returncode != 0
    assert "stage 1 (dev1): corrupt frame for microbatch 5" in done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads((out / "summary.json").read_text())
    assert 5 * 8 <= result["items_completed"] < 90 * 8  # what came before the fault is kept
    assert any("corrupt" in note for note in result["notes"])


def test_a_frame_with_other_tensors_than_the_stage_takes_ends_the_run_naming_them(tmp_path):
    """A genuine frame (tags and CRCs valid) from a sender whose stage does not match: refused
    by name before the stage computes, not a KeyError inside the model."""
    out = tmp_path / "out"
    done = launch(config(tmp_path, 2, "fixed:8"), out, "--fault", "0:rename:3")
    assert done.returncode == 1
    assert "stage 1 (dev1): the frame for microbatch 3 on link 0 holds {'xhidden'" in done.stderr
    assert "where this stage takes {'hidden'" in done.stderr and "Traceback" not in done.stderr


def test_dead_neighbour_ends_the_run_naming_the_stage(tmp_path):
    out = tmp_path / "out"
    start = time.monotonic()
    done = launch(config(tmp_path, 3, "fixed:8"), out, "--fault", "1:die:5")
    assert done.returncode != 0
    assert time.monotonic() - start < 30
    assert "stage 1 (dev1) on link" in done.stderr  # its neighbours name it
    assert "rank 1 (dev1) exited with 3" in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads((out / "rank0.json").read_text())["error"].startswith("stage 0 (dev0)")
    assert (out / "summary.json").exists()
    assert (out / "timeline.csv").exists()


def ranks_running(out: Path) -> list[int]:
    """Pids of live rank processes writing into `out` (found through /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ")[-1].split()[0]
        except OSError:
            continue
        if b"--rank" in cmdline and str(out).encode() in cmdline and state != "Z":
            pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]


@pytest.mark.root("a tbf-shaped veth between network namespaces")
def test_rate_limited_link_lowers_the_bits(tmp_path):
    """A 5 Mbit/s tbf on a veth pair between two network namespaces: the quantpipe policy,
    from its own ack-timed measurements, drops from float32 and the target rate is met."""
    tag = f"qp{os.getpid() % 10000}"
    ns = [f"{tag}a", f"{tag}b"]
    dev = [f"{tag}va", f"{tag}vb"]
    setup = [
        ["ip", "netns", "add", ns[0]], ["ip", "netns", "add", ns[1]],
        ["ip", "link", "add", dev[0], "type", "veth", "peer", "name", dev[1]],
        *[["ip", "link", "set", dev[k], "netns", ns[k]] for k in range(2)],
        *[["ip", "-n", ns[k], "addr", "add", f"10.77.0.{k + 1}/24", "dev", dev[k]]
          for k in range(2)],
        *[["ip", "-n", ns[k], "link", "set", dev[k], "up"] for k in range(2)],
        *[["ip", "-n", ns[k], "link", "set", "lo", "up"] for k in range(2)],
        ["tc", "-n", ns[0], "qdisc", "add", "dev", dev[0], "root", "tbf", "rate", "5mbit",
         "burst", "32kbit", "latency", "50ms"],
    ]
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        '[model]\nname = "digits-vit"\nmicrobatch = 8\n[quant]\nallowed_bits = [4, 8, 16, 32]\n'
        '[policy]\nname = "quantpipe"\nwindow = 8\n[source]\nmode = "open"\ntarget_rate = 400\n'
        '[run]\nmetrics_interval_s = 1.0\n[[devices]]\nname = "a"\n[[devices]]\nname = "b"\n'
    )
    out = tmp_path / "out"
    ranks = []
    try:
        for command in setup:
            subprocess.run(command, check=True, timeout=10)
        for k in range(2):
            ranks.append(subprocess.Popen(
                ["ip", "netns", "exec", ns[k], sys.executable, "-m", "quantpipe_core.runtime",
                 "--config", str(cfg), "--rank", str(k), "--master-addr", "10.77.0.1",
                 "--master-port", "29611", "--out", str(out if k == 0 else tmp_path / "o1"),
                 "--duration", "5", "--timeout-s", "10"],
                cwd=ROOT, env={**os.environ, "GLOO_SOCKET_IFNAME": dev[k],
                               "QUANTPIPE_RUN_KEY": "a run key both devices share"},
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            ))
        codes = [rank.wait(timeout=RUN_TIMEOUT_S) for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait()
        for name in ns:
            subprocess.run(["ip", "netns", "del", name], timeout=10, check=False)
    assert codes == [0, 0]
    rows = list(csv.DictReader((out / "windows.csv").open()))
    assert float(rows[0]["bits"]) == 32.0  # before any measurement
    later = rows[len(rows) // 2 :]
    assert all(float(r["measured_mbps"]) < 10 for r in later)  # it sees the 5 Mbit/s limit
    assert sum(float(r["bits"]) for r in later) / len(later) <= 16
    result = json.loads((out / "summary.json").read_text())
    assert result["mean_bits"] < 16
    assert result["throughput_items_per_s"] >= 0.9 * 400


@pytest.mark.parametrize("option", [
    ["--microbatches", "0"], ["--microbatches", "-3"], ["--duration", "0"], ["--duration", "-1"],
    ["--timeout-s", "0"], ["--timeout-s", "-1"], ["--timeout-s", "nan"], ["--rank", "-1"],
    ["--master-port", "70000"],
])
def test_meaningless_options_are_refused_in_one_line(tmp_path, option, capsys):
    from quantpipe_core.runtime.__main__ import parser

    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(["--config", "c.toml", "--rank", "0", *option])
    assert exit_.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_an_out_that_is_a_file_is_refused_before_any_rank_starts(tmp_path, capsys):
    from quantpipe_core.runtime.launch import main

    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(config(tmp_path, 2, "fixed:8")), "--out", str(tmp_path / "file")])
    assert exit_.value.code == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_a_run_bounded_by_microbatches_is_timed_over_its_own_span(tmp_path):
    """--microbatches 4 on a config of 120 s: throughput over the 4 microbatches' span, not
    items / 120 s (was 1.1 items/s against a target of 128)."""
    cfg = config(tmp_path, 2, "fixed:8")
    cfg.write_text(cfg.read_text() + "[run]\nduration_s = 120\n")
    out = tmp_path / "out"
    done = launch(cfg, out, "--microbatches", "4")
    assert done.returncode == 0, done.stderr
    result = json.loads((out / "summary.json").read_text())
    assert result["items_completed"] == 32
    assert result["throughput_items_per_s"] > 32 / 60


def test_a_policy_slower_than_the_timeout_is_named_by_its_own_stage(tmp_path):
    """Not only as the next stage's link timeout: the stage whose decision took too long says so."""
    (tmp_path / "sleepy.py").write_text(
        "import time\n"
        "class Sleepy:\n"
        "    def decide(self, obs):\n"
        "        time.sleep(4)\n"
        "        return [8] * obs.window_len\n"
    )
    cfg = config(tmp_path, 2, "sleepy:Sleepy")
    out = tmp_path / "out"
    done = launch(cfg, out, "--timeout-s", "3", "--microbatches", "8", pythonpath=tmp_path)
    assert done.returncode == 1
    assert "stage 0 (dev0): microbatch 0 took" in done.stderr
    assert "(policy sleepy:Sleepy), longer than --timeout-s 3" in done.stderr


def test_a_short_last_microbatch_counts_its_real_items(tmp_path):
    """One pass over the digits in microbatches of 7: the last one is short, and the summary
    counts the images that went through, not 7 per microbatch."""
    cfg = config(tmp_path, 2, "fixed:8", mode="closed")
    cfg.write_text(cfg.read_text().replace("microbatch = 8", "microbatch = 7"))
    out = tmp_path / "out"
    done = launch(cfg, out)
    assert done.returncode == 0, done.stderr
    images = len(task_for(load_model("digits-vit"), 7).labels)
    assert images % 7 != 0
    result = json.loads((out / "summary.json").read_text())
    assert result["items_completed"] == images
    assert result["throughput_items_per_s"] > 0


def test_runs_with_a_duration_end_at_it_in_both_loops(tmp_path):
    """A sink 10x slower than the source: the open loop stops offering at the duration and drops
    what is still queued (a note counts what was never offered); the closed loop finishes its
    few microbatches in flight and their credits. Both end soon after the duration. The target
    rate is far above what the first stage computes, so the open source is surely behind at the
    end (at the automatic target, 90 % of the profiled rate, whether it is depends on the
    machine's speed that moment)."""
    for mode in ("open", "closed"):
        out = tmp_path / mode
        start = time.monotonic()
        done = launch(config(tmp_path, 2, "fixed:8", mode=mode, target_rate=5000), out,
                      "--duration", "4", "--fault", "1:slow:300")
        assert done.returncode == 0, done.stderr
        assert time.monotonic() - start < 40
        result = json.loads((out / "summary.json").read_text())
        assert 0 < result["items_completed"] <= 8 * (4 / 0.3 + 1)
        never = [n for n in result["notes"] if "never offered" in n]
        assert bool(never) == (mode == "open")
