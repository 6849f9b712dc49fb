"""Bad command lines and inputs get one line on stderr naming the option, file or field, and exit
status 2, before any long work; a user's policy that fails is named with what failed, and its
traceback shows only under --debug (issue 14, items 11, 13 and 14)."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

import emulation.run
from quantpipe_core.cli import (
    OutError,
    check_out_dir,
    nonnegative_int,
    one_line,
    positive_float,
    positive_int,
)
from sim import run

POLICIES = """
    raise_on_import = False

    class BadInit:
        def __init__(self):
            raise RuntimeError("no constructor today")

    class Raises:
        def decide(self, obs):
            if obs.window_index >= 2:
                raise ZeroDivisionError("my policy divided by zero")
            return [8] * obs.window_len

    class ReturnsNone:
        def decide(self, obs):
            return None
"""


def refused(main: Callable[[Sequence[str]], int], argv: Sequence[str], capsys) -> str:
    """The one line `main` printed on refusing `argv` (exit status 2, no traceback)."""
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "\n" not in err.strip(), err
    return err.strip().split("\r")[-1].strip()  # after a progress bar's last redraw


@pytest.fixture
def trace(tmp_path) -> Path:
    path = tmp_path / "step.csv"
    path.write_text("time_s,mbps\n0,60\n60,16\n120,16\n")
    return path


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


@pytest.fixture
def user_policies(tmp_path, monkeypatch) -> str:
    """A module of user policies that fail in each way; its name."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "failing_policies.py").write_text(textwrap.dedent(POLICIES))
    (folder / "broken_module.py").write_text("raise RuntimeError('broken module')\n")
    monkeypatch.syspath_prepend(str(folder))
    return "failing_policies"


@pytest.fixture
def no_emulation(monkeypatch) -> None:
    """emulation.run's argument checks must refuse before any network is built."""

    def started(*args, **kwargs):
        pytest.fail("the emulation started")

    monkeypatch.setattr(emulation.run, "emulate", started)


# ----- the shared checkers --------------------------------------------------------------------


def test_out_folders_that_cannot_be_written_are_refused_and_good_ones_are_not_created(
        tmp_path, a_file):
    assert check_out_dir(tmp_path) == tmp_path
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()
    for bad, reason in [(a_file, "exists and is not a folder"),
                        (a_file / "under", "is a file, not a folder"),
                        (Path("/proc/quantpipe-out"), "cannot write into"),
                        (tmp_path / ("x" * 300), "cannot write into")]:
        with pytest.raises(OutError, match=reason):
            check_out_dir(bad)


@pytest.mark.parametrize(("parse", "text"), [
    (positive_float, "0"), (positive_float, "-1"), (positive_float, "nan"),
    (positive_float, "inf"), (positive_float, "fast"), (positive_int, "0"),
    (positive_int, "-5"), (positive_int, "2.5"), (nonnegative_int, "-1"),
])
def test_number_types_refuse_meaningless_values(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)


def test_number_types_take_meaningful_values():
    assert (positive_float("0.5"), positive_int("3"), nonnegative_int("0")) == (0.5, 3, 0)


def test_one_line_folds_newlines_and_cuts_a_huge_echo():
    assert one_line("a\nb  c") == "a b c"
    assert len(one_line("x" * 5_000_000)) == 500


# ----- sim.run ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--duration", "0"], "argument --duration: must be a finite number > 0, got 0"),
    (["--duration", "-1"], "argument --duration: must be a finite number > 0, got -1"),
    (["--target-rate", "nan"], "argument --target-rate: must be a finite number > 0"),
    (["--scale", "0"], "argument --scale: must be a finite number > 0"),
    (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
])
def test_sim_run_refuses_meaningless_numbers(trace, capsys, argv, message):
    assert message in refused(run.main, [str(trace), *argv], capsys)


def test_sim_run_refuses_an_out_that_is_a_file_before_running(trace, a_file, capsys,
                                                              monkeypatch):
    monkeypatch.setattr(run, "simulate", lambda *a, **k: pytest.fail("the run started"))
    line = refused(run.main, [str(trace), "--out", str(a_file)], capsys)
    assert "argument --out" in line and "exists and is not a folder" in line
    line = refused(run.main, [str(trace), "--out", str(a_file / "sub")], capsys)
    assert "argument --out" in line and "is a file, not a folder" in line


def test_sim_run_checks_its_default_out_before_running(trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("a file where the runs folder goes\n")
    monkeypatch.setattr(run, "simulate", lambda *a, **k: pytest.fail("the run started"))
    line = refused(run.main, [str(trace)], capsys)
    assert line == "sim.run: cannot create runs/step-quantpipe: runs is a file, not a folder"


def test_sim_run_names_a_links_missing_trace(trace, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[[links]]\ntrace = "missing.csv"\n')
    line = refused(run.main, [str(trace), "--config", str(config)], capsys)
    assert f"{config}: links[0].trace: no such file {tmp_path / 'missing.csv'}" in line


@pytest.mark.parametrize(("policy", "message"), [
    ("broken_module:Any", "policy 'broken_module:Any': importing broken_module raised "
     "RuntimeError: broken module"),
    ("failing_policies:BadInit", "policy 'failing_policies:BadInit': its constructor raised "
     "RuntimeError: no constructor today"),
    ("failing_policies:Raises", "policy 'failing_policies:Raises' failed on link 0, window 2 "
     "(t = "),
    ("failing_policies:ReturnsNone", "policy 'failing_policies:ReturnsNone' failed on link 0, "
     "window 0 (t = 0.000 s): ValueError: policy returned None"),
])
def test_a_failing_user_policy_is_named_with_what_failed(trace, user_policies, capsys, tmp_path,
                                                         policy, message):
    line = refused(run.main, [str(trace), "--policy", policy, "--duration", "30",
                              "--out", str(tmp_path / "out")], capsys)
    assert message in line and line.endswith("(--debug or QUANTPIPE_DEBUG=1 prints the "
                                             "traceback)"), line


def test_debug_shows_the_user_policys_traceback(trace, user_policies, capsys, tmp_path,
                                                monkeypatch):
    argv = [str(trace), "--policy", "failing_policies:Raises", "--duration", "30",
            "--out", str(tmp_path / "out")]
    for extra, env in (["--debug"], None), ([], "1"):
        if env:
            monkeypatch.setenv("QUANTPIPE_DEBUG", env)
        with pytest.raises(SystemExit) as exit_info:
            run.main([*argv, *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert "Traceback" in err and 'raise ZeroDivisionError("my policy divided by zero")' in err
        assert err.rstrip().endswith("ZeroDivisionError: my policy divided by zero")


# ----- emulation.run: checks only, before root and before any network ----------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["--timeout-s", "0"], "argument --timeout-s: must be a finite number > 0, got 0"),
    (["--timeout-s", "-1"], "argument --timeout-s: must be a finite number > 0, got -1"),
    (["--duration", "0"], "argument --duration: must be a finite number > 0, got 0"),
    (["--duration", "-1"], "argument --duration: must be a finite number > 0, got -1"),
    (["--policy", "failing_policies:BadInit"], "its constructor raised RuntimeError"),
])
def test_emulation_run_refuses_bad_arguments_before_any_network(trace, capsys, no_emulation,
                                                                user_policies, argv, message):
    assert message in refused(emulation.run.main, [str(trace), *argv], capsys)


def test_emulation_run_refuses_an_out_that_is_a_file(trace, a_file, capsys, no_emulation):
    line = refused(emulation.run.main, [str(trace), "--out", str(a_file)], capsys)
    assert "argument --out" in line and "exists and is not a folder" in line


@pytest.mark.parametrize(("text", "message"), [
    ("[policy]\nname = 'controller'\n[policy.params]\ngain = 'high'\n",
     'policy.params.gain: expected a number, got string "high"'),
    ("[[links]]\nfloor_mbps = 1e308\n", "links[0].floor_mbps: must be <= 1e+09, got 1e+308"),
])
def test_sim_run_refuses_config_values_that_failed_in_mid_run(trace, tmp_path, capsys, text,
                                                              message, monkeypatch):
    config = tmp_path / "run.toml"
    config.write_text(text)
    monkeypatch.setattr(run, "simulate", lambda *a, **k: pytest.fail("the run started"))
    line = refused(run.main, [str(trace), "--config", str(config)], capsys)
    assert line == f"sim.run: {config}: {message}"


# ----- sim.traces ---------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "message"), [
    (["convert", "{trace}", "{tmp}", "--to", "csv"], "traces: {tmp}: Is a directory"),
    (["convert", "{trace}", "{file}/out.csv", "--to", "csv"], "traces: {file}: File exists"),
    (["info", "{binary}"], "traces: {binary}, line 1: not UTF-8 text"),
    (["generate", "step-drop", "{tmp}/g.csv", "--duration", "0"],
     "traces: duration_s must be a positive number of seconds, got 0.0"),
    (["info", "{trace}", "--plot", "{file}/p.png"],
     "python -m sim.traces info: error: argument --plot: {file} exists and is not a folder"),
    (["info", "{trace}", "--plot", "{tmp}"],
     "python -m sim.traces info: error: argument --plot: {tmp} is a folder, not a file"),
])
def test_sim_traces_answers_bad_input_in_one_line(trace, a_file, tmp_path, capsys, argv,
                                                  message):
    from sim import traces

    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    names = {"{trace}": str(trace), "{tmp}": str(tmp_path), "{file}": str(a_file),
             "{binary}": str(binary)}

    def filled(text: str) -> str:
        for key, value in names.items():
            text = text.replace(key, value)
        return text

    assert refused(traces.main, [filled(arg) for arg in argv], capsys).startswith(filled(message))


@pytest.mark.parametrize("command", ["sim.compare", "sim.sweep", "profile", "runtime.launch"])
def test_every_other_command_refuses_an_out_that_is_a_file(command, trace, a_file, tmp_path,
                                                           capsys):
    import quantpipe_core.profile
    import quantpipe_core.runtime.launch
    import sim.compare
    import sim.sweep

    spec = tmp_path / "sweep.toml"
    spec.write_text("")
    main, argv = {
        "sim.compare": (sim.compare.main, [str(trace)]),
        "sim.sweep": (sim.sweep.main, [str(spec)]),
        "profile": (quantpipe_core.profile.main, []),
        "runtime.launch": (quantpipe_core.runtime.launch.main, ["--config", "c.toml"]),
    }[command]
    assert "exists and is not a folder" in refused(main, [*argv, "--out", str(a_file)], capsys)


@pytest.mark.parametrize("argv, message", [
    (["--codecs", "aciq/none/tensor+zstd"], "--codecs take labels without a coder"),
    (["--coder", "none"], "invalid choice: 'none'"),
    (["--samples", "0"], "must be at least 1"),
    (["--codecs", "aciq+lz4"], "unknown lossless 'lz4'"),
])
def test_lossless_profile_refuses_bad_flags_in_one_line(argv, message, capsys):
    from quantpipe_core import lossless_profile

    assert message in refused(lossless_profile.main, argv, capsys)
