"""`python -m sim.traces`: info, convert and generate, and the shipped traces it made."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from quantpipe_core.trace import Trace, load_trace
from sim.traces import describe, main

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "traces"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def shipped_commands() -> list[str]:
    """The `generate` commands that traces/README.md says made the shipped files."""
    text = (ROOT / "traces" / "README.md").read_text()
    return re.findall(r"^\.venv/bin/python -m sim\.traces (generate .*)$", text, re.M)


@pytest.mark.parametrize("command", shipped_commands(), ids=lambda c: c.split()[2])
def test_each_shipped_trace_is_what_its_documented_command_writes(command, tmp_path, monkeypatch):
    if "../shared/" in command and not SHARED.is_dir():
        pytest.skip("needs ../shared/traces (CI has it; a fresh clone does not)")
    args = shlex.split(command)
    shipped = next(a for a in args if a.startswith("traces/"))
    monkeypatch.chdir(ROOT)
    assert main([str(tmp_path / "out.csv") if a == shipped else a for a in args]) == 0
    assert (tmp_path / "out.csv").read_bytes() == (ROOT / shipped).read_bytes()


def test_every_shipped_trace_has_a_documented_command():
    documented = {next(a for a in shlex.split(c) if a.startswith("traces/"))
                  for c in shipped_commands()}
    assert documented == {f"traces/{p.name}" for p in (ROOT / "traces").glob("*.csv")}


def test_info_prints_duration_and_rate_statistics_and_plots(tmp_path, capsys):
    plot = tmp_path / "rate.png"
    assert main(["info", str(ROOT / "traces" / "on-off.csv"), "--plot", str(plot)]) == 0
    table = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert table["format"] == "csv"
    assert table["duration_s"] == "120.000"
    assert table["mean_mbps"] == "24.002"
    assert table["max_mbps"] == "30.000"
    assert table["at_floor"].startswith("20.0 % of the time")
    assert plot.read_bytes().startswith(PNG_MAGIC)


def test_info_applies_scale_and_bin(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("time_s,mbps\n0,10\n1.5,20\n3,20\n")
    assert main(["info", str(path), "--scale", "2", "--bin", "1"]) == 0
    table = dict(line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines())
    assert (table["segments"], table["min_mbps"], table["max_mbps"]) == ("3", "20.000", "40.000")


def test_describe_weights_rates_by_how_long_they_last():
    trace = Trace.from_segments([0, 90], [1, 50], 100)
    stats = describe(trace, floor_mbps=0.01)
    assert stats["p5_mbps"] == stats["median_mbps"] == 1 and stats["p95_mbps"] == 50
    assert stats["mean_mbps"] == pytest.approx(5.9)
    assert stats["at_floor"] == 0


def test_convert_writes_the_same_capacity_in_another_format(tmp_path):
    source = ROOT / "traces" / "ramp.csv"
    assert main(["convert", str(source), str(tmp_path / "ramp.log"), "--to", "mbps-log"]) == 0
    assert main(["convert", str(source), str(tmp_path / "ramp.up"), "--to", "mahimahi"]) == 0
    assert load_trace(tmp_path / "ramp.log") == load_trace(source)
    assert load_trace(tmp_path / "ramp.up").mean_mbps() == pytest.approx(22.0, abs=0.001)


def test_convert_scales_and_bins(tmp_path):
    out = tmp_path / "t.csv"
    args = ["convert", str(ROOT / "traces" / "step-drop.csv"), str(out), "--to", "csv"]
    assert main([*args, "--scale", "0.5", "--bin", "40"]) == 0  # 20 Mbit/s, 4 from 60 s
    assert load_trace(out).segments() == [(0.0, 20.0), (40.0, 12.0), (80.0, 4.0)]


@pytest.mark.parametrize("kind", ["step-drop", "ramp", "random-walk", "on-off"])
def test_generate_writes_each_kind(kind, tmp_path, capsys):
    out = tmp_path / "deep" / f"{kind}.csv"
    assert main(["generate", kind, str(out), "--duration", "90", "--seed", "3"]) == 0
    assert load_trace(out).duration_s == 90
    assert f"wrote {out} (csv): 90 s" in capsys.readouterr().out


def test_generate_like_copies_a_trace_given_with_from(tmp_path):
    source = ROOT / "traces" / "random-walk.csv"
    out = tmp_path / "like.up"
    args = ["generate", "like", str(out), "--from", str(source), "--scale", "2", "--to", "mahimahi"]
    assert main(args) == 0
    copy, real = load_trace(out), load_trace(source, scale=2)
    assert copy.duration_s == real.duration_s
    assert min(real.mbps) - 0.1 <= copy.mean_mbps() <= max(real.mbps)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "missing.csv"], "traces: missing.csv: No such file or directory"),
        (["info", "{bad}"], "traces: {bad}, line 3: negative rate -1.0"),
        (["info", "{bad}", "--format", "mahimahi"], "traces: {bad}, line 1: expected a non-"),
        (["info", "{good}", "--scale", "0"], "traces: scale must be a positive number, got 0"),
        (["convert", "{good}", "{tmp}/x", "--to", "csv", "--bin", "-1"], "traces: bin_s must be"),
        (["generate", "step-drop", "{tmp}/x.csv", "--at", "99"], "traces: the drop must be"),
        (["generate", "like", "{tmp}/x.csv", "--from", "{bad}"], "traces: {bad}, line 3"),
    ],
)
def test_errors_exit_2_with_a_message(args, message, tmp_path, capsys):
    bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
    bad.write_text("time_s,mbps\n0,5\n2,-1\n")
    good.write_text("time_s,mbps\n0,5\n2,5\n")
    names = {"bad": bad, "good": good, "tmp": tmp_path}
    assert main([a.format(**names) for a in args]) == 2
    assert capsys.readouterr().err.startswith(message.format(**names))


@pytest.mark.parametrize(
    "args",
    [[], ["info", "--help"], ["convert", "--help"], ["generate", "--help"],
     ["generate", "on-off", "--help"], ["convert", "a", "b"], ["generate", "sine", "x.csv"]],
)
def test_help_explains_and_usage_errors_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    out = capsys.readouterr()
    if "--help" in args:
        assert exit_.value.code == 0 and "usage: python -m sim.traces" in out.out
    else:  # one line naming the problem, as every command answers bad input
        assert exit_.value.code == 2 and len(out.err.strip().splitlines()) == 1
        assert out.err.startswith("python -m sim.traces") and "(see --help)" in out.err


def test_the_module_runs_as_a_command_and_reports_errors_on_stderr():
    done = subprocess.run(
        [sys.executable, "-m", "sim.traces", "info", "no-such-trace.csv"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "traces: no-such-trace.csv: No such file or directory\n"
