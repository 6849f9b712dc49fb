"""`python -m emulation.run`: a real emulated run against its simulation, and the agreement
figures. The run needs root (skipped outside CI, failed in CI without it); the agreement
arithmetic is checked anywhere on result folders written here."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulation.agreement import (
    agreement,
    matched_windows,
    measured_over_trace,
    write_agreement,
)
from emulation.agreement import main as agreement_main
from emulation.cleanup import leftovers

ROOT = Path(__file__).resolve().parents[1]
DROP_S, DURATION_S, TARGET = 15.0, 30.0, 128.0

CONFIG = f"""
[model]
name = "digits-vit"
cuts = ["block1.out"]

[source]
target_rate = {TARGET}

[[devices]]
[[devices]]

[[links]]
bin_s = 0.1
payload_share = 0.956

[run]
duration_s = {DURATION_S}
metrics_interval_s = 2.0
"""


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def emulated(tmp_path_factory) -> Path:
    """30 s of the digits ViT emulated on a 4 -> 0.8 Mbit/s step at 15 s (16 bits fit, then 4);
    built by the first test that uses it, after its ``root`` marker checked for root."""
    folder = tmp_path_factory.mktemp("emulation")
    trace, config = folder / "step.csv", folder / "run.toml"
    subprocess.run(
        [sys.executable, "-m", "sim.traces", "generate", "step-drop", str(trace), "--high", "4",
         "--low", "0.8", "--at", str(DROP_S), "--duration", str(2 * DURATION_S)],
        check=True, cwd=ROOT, capture_output=True,
    )
    config.write_text(CONFIG)
    done = subprocess.run(
        [sys.executable, "-m", "emulation.run", str(trace), "--config", str(config),
         "--out", str(folder / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "out"


@pytest.mark.slow
@pytest.mark.root("Mininet emulation")
def test_an_emulated_run_writes_the_simulators_files_the_simulation_and_the_agreement(emulated):
    for folder in (emulated, emulated / "simulated"):
        for name in ("timeline.csv", "windows.csv", "summary.json", "plot.png"):
            assert (folder / name).stat().st_size > 0, folder / name
    assert (emulated / "agreement.png").stat().st_size > 0
    summary = json.loads((emulated / "summary.json").read_text())
    assert summary["run"]["emulation"]["failed_ranks"] == []
    assert summary["measured_accuracy"] > 0.9  # the digits really went through both stages


@pytest.mark.slow
@pytest.mark.root("Mininet emulation")
def test_the_bitwidth_drops_within_two_windows_of_the_bandwidth_drop(emulated):
    windows = read_csv(emulated / "windows.csv")
    before = [float(w["bits"]) for w in windows if float(w["t_end_s"]) <= DROP_S]
    assert set(before) == {16.0}
    first_after = next(i for i, w in enumerate(windows) if float(w["t_start_s"]) >= DROP_S)
    dropped = next(i for i, w in enumerate(windows) if float(w["bits"]) < 16)
    assert first_after <= dropped <= first_after + 2


@pytest.mark.slow
@pytest.mark.root("Mininet emulation")
def test_the_delivered_rate_comes_back_to_at_least_90_percent_of_the_target(emulated):
    sink = [float(row["t_sink_s"]) for row in read_csv(emulated / "timeline.csv")
            if row["t_sink_s"]]
    settled = DROP_S + 5
    items = 8 * sum(settled <= t < DURATION_S for t in sink)
    assert items / (DURATION_S - settled) >= 0.9 * TARGET


@pytest.mark.slow
@pytest.mark.root("Mininet emulation")
def test_the_emulation_agrees_with_the_simulation(emulated):
    result = json.loads((emulated / "agreement.json").read_text())
    assert result["windows"] >= 50
    assert result["rate_error_median"] <= 0.10 and result["rate_agrees"]
    assert result["same_bits_share"] >= 0.80 and result["bits_agree"]


@pytest.mark.slow
@pytest.mark.root("Mininet emulation")
def test_nothing_is_left_behind(emulated):
    assert leftovers() == {"netns": [], "veths": [], "processes": []}
    assert subprocess.run(["pgrep", "-f", "quantpipe_core.runtime"],
                          capture_output=True).stdout == b""


@pytest.mark.slow
@pytest.mark.root("Mininet emulation")
def test_sigterm_keeps_what_was_measured_and_cleans_up(tmp_path):
    """SIGTERM (as Ctrl-C) mid-run: every rank saves its report, the emulator merges them with
    an "interrupted" note, exits 130, and leaves no network or process behind."""
    trace, config, out = tmp_path / "flat.csv", tmp_path / "run.toml", tmp_path / "out"
    trace.write_text("time_s,mbps\n0,4\n60,4\n")
    config.write_text(CONFIG.replace(f"duration_s = {DURATION_S}", "duration_s = 60"))
    run = subprocess.Popen([sys.executable, "-m", "emulation.run", str(trace), "--config",
                            str(config), "--out", str(out)], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (out / "ranks" / "clock.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(5)
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 130, stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items_completed"] > 0
    assert any(note.startswith("interrupted at t = ") for note in summary["notes"])
    assert summary["run"]["emulation"]["interrupted"] is True
    assert leftovers() == {"netns": [], "veths": [], "processes": []}


# ----- the agreement arithmetic ---------------------------------------------------------------

FIELDS = ["link", "window_index", "t_start_s", "t_end_s", "bits", "measured_mbps", "trace_mbps",
          "delivered_items_per_s"]


def write_windows(folder: Path, rows: list[tuple[int, int, float, float]]) -> Path:
    """(link, index, bits, delivered) rows as a result folder's windows.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "windows.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(FIELDS)
        for link, index, bits, delivered in rows:
            writer.writerow([link, index, index, index + 1, bits, 5.0, "", delivered])
    return folder


def test_windows_are_matched_by_link_and_index_without_each_links_last():
    emulated = {(0, i): {} for i in range(5)} | {(1, i): {} for i in range(3)}
    simulated = {(0, i): {} for i in range(4)} | {(1, i): {} for i in range(3)}
    assert matched_windows(emulated, simulated) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


def test_rate_error_is_relative_to_the_simulation_and_bits_must_match_exactly(tmp_path):
    sim = write_windows(tmp_path / "sim", [(0, i, 8, 100.0) for i in range(6)])
    emu = write_windows(tmp_path / "emu", [
        (0, 0, 8, 100.0), (0, 1, 8, 95.0), (0, 2, 6, 80.0), (0, 3, 8, 120.0), (0, 4, 8, 100.0),
        (0, 5, 8, 1.0),  # the last window: left out
    ])
    result = agreement(emu, sim)
    assert result["windows"] == 5
    assert result["rate_error_median"] == pytest.approx(0.05)
    assert result["same_bits_share"] == pytest.approx(0.8)
    assert result["rate_agrees"] and result["bits_agree"]
    assert result["links"] == [{"link": 0, "windows": 5, "rate_error_median": 0.05,
                                "rate_error_p90": pytest.approx(0.2),
                                "same_bits_share": pytest.approx(0.8)}]


def test_runs_that_disagree_fail_the_thresholds_and_the_files_say_so(tmp_path):
    sim = write_windows(tmp_path / "sim", [(0, i, 8, 100.0) for i in range(5)])
    emu = write_windows(tmp_path / "emu", [(0, i, 4, 50.0) for i in range(5)])
    result = write_agreement(emu, emu, sim, {"notes": ["made up"]})
    assert (result["rate_agrees"], result["bits_agree"]) == (False, False)
    assert json.loads((emu / "agreement.json").read_text())["notes"] == ["made up"]
    assert (emu / "agreement.png").stat().st_size > 0


def test_the_command_refuses_folders_without_results(tmp_path):
    done = subprocess.run([sys.executable, "-m", "emulation.agreement", str(tmp_path),
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "has no windows.csv" in done.stderr


@pytest.mark.parametrize(("content", "message"), [
    (b"\x87\xff\x00binary", "not a readable windows.csv: 'utf-8' codec can't decode"),
    (b"a,b\n1,2\n", "not a windows.csv: no 'link' column"),
    (b"link,window_index\nx,1\n", "not a readable windows.csv: could not convert"),
])
def test_the_command_names_a_windows_csv_it_cannot_read(tmp_path, capsys, content, message):
    sim = write_windows(tmp_path / "sim", [(0, i, 8, 100.0) for i in range(4)])
    (tmp_path / "emu").mkdir()
    (tmp_path / "emu" / "windows.csv").write_bytes(content)
    assert agreement_main([str(tmp_path / "emu"), str(sim)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"emulation.agreement: {tmp_path / 'emu' / 'windows.csv'}: ")
    assert message in err and "\n" not in err


def test_the_command_makes_its_out_folder_and_refuses_a_file(tmp_path, capsys):
    sim = write_windows(tmp_path / "sim", [(0, i, 8, 100.0) for i in range(4)])
    out = tmp_path / "new" / "agreement"
    assert agreement_main([str(sim), str(sim), "--out", str(out)]) == 0
    assert (out / "agreement.json").is_file() and (out / "agreement.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        agreement_main([str(sim), str(sim), "--out", str(out / "agreement.json")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err
    assert f"argument --out: {out / 'agreement.json'} exists and is not a folder" in err


def test_measured_over_trace_pairs_each_measurement_with_the_window_it_covers():
    windows = {
        (0, 0): {"bits": 16.0, "measured_mbps": None, "trace_mbps": 4.0},
        (0, 1): {"bits": 4.0, "measured_mbps": 5.0, "trace_mbps": 0.8},  # covers window 0
        (0, 2): {"bits": 4.0, "measured_mbps": 0.72, "trace_mbps": 0.8},  # covers window 1
    }
    assert measured_over_trace(windows) == {"4": 0.9, "16": 1.25}


@pytest.mark.parametrize(("argv", "message"), [
    (["no-such-trace.csv"], "trace no-such-trace.csv does not exist"),
    (["traces/step-drop.csv", "--policy", "oracle"], "oracle policy reads the trace's future"),
    (["traces/step-drop.csv", "--policy", "optimal"], "optimal policy reads the trace's future"),
    (["traces/step-drop.csv", "--scale", "-1"], "argument --scale: must be a finite number > 0"),
])
@pytest.mark.slow
@pytest.mark.root("emulation.run")
def test_bad_runs_are_refused_with_a_message_before_any_network_is_built(argv, message):
    done = subprocess.run([sys.executable, "-m", "emulation.run", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert leftovers() == {"netns": [], "veths": [], "processes": []}
