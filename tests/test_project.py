"""The README's two quick-start commands are what CI runs and what a fresh machine needs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def sh_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)


def test_readme_starts_with_the_main_job_then_the_tests():
    main_job, tests = sh_blocks()[:2]
    assert "scripts/setup.sh" in main_job and "sim.run traces/" in main_job
    assert "scripts/setup.sh" in tests and "pytest" in tests and "ruff check" in tests


def test_ci_runs_the_readmes_test_block():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "n==2" in ci


def test_setup_pins_the_cpu_torch_in_the_same_install_as_the_project():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r'"torch==2\.13\.0" -e "\.\[test,cluster\]"', setup)
    assert "--system-site-packages" in setup and "/usr/bin/python3" in setup


@pytest.mark.slow
def test_codec_benchmark_runs_and_reports_its_goals():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "codec.py"), "--repeats", "1", "--bits", "2",
         "--codecs", "minmax/none/tensor,ds-aciq/none/tensor,ds-aciq/hadamard/auto"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    assert re.search(r"ds-aciq/none/tensor encode <= 2.0x minmax at 2 bits: \d+\.\d+x", out)
    assert re.search(r"ds-aciq/hadamard/auto encode <= 2.5x minmax at 2 bits: \d+\.\d+x", out)
    assert "every scheme decodes >= 1000 MB/s" in out
    assert "digits ViT: default encode + decode <= the model's compute" in out


@pytest.mark.slow
def test_codec_benchmark_refuses_bad_arguments_clearly():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "codec.py"), "--bits", "2,x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "expected comma-separated integers" in out.stderr


@pytest.mark.slow
def test_the_python_examples_in_the_guides_run(tmp_path):
    for guide in ("models.md",):  # config.md and traces.md run in their own tests
        text = (ROOT / "docs" / guide).read_text()
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
        assert blocks, f"docs/{guide} has no python example"
        for block in blocks:
            subprocess.run([sys.executable, "-c", block], check=True, cwd=tmp_path, timeout=300)


@pytest.mark.slow
def test_the_user_guides_policy_example_runs_in_the_simulator(tmp_path):
    text = (ROOT / "docs" / "index.md").read_text()
    module = re.search(r"```python\n# my_policies.py\n(.*?)```", text, flags=re.S).group(1)
    (tmp_path / "my_policies.py").write_text(module)
    command = re.search(r"```sh\n(PYTHONPATH=\. .*?)\n```", text, flags=re.S).group(1)
    argv = command.split()[2:]  # after "PYTHONPATH=. .venv/bin/python"
    assert argv[:2] == ["-m", "sim.run"]
    result = subprocess.run(
        [sys.executable, *argv, "--out", str(tmp_path / "out"), "--duration", "60"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "summary.json").is_file()


def test_every_test_docs_reliability_names_exists():
    """docs/reliability.md maps each bad input to its test: the names must stay real."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    missing, current = [], None
    for file, name in re.findall(r"`(test_\w+\.py)?(?:::)?(test_\w+)?`", text):
        current = file or current
        if name:
            source = (ROOT / "tests" / current).read_text()
            if not re.search(rf"^def {name}\(", source, re.M):
                missing.append(f"{current}::{name}")
    assert not missing


@pytest.mark.slow
def test_frame_auth_benchmark_runs_and_reports_its_goal():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.frame_auth", "--repeats", "1", "--bits", "8"],
        capture_output=True, text=True, check=True, timeout=300, cwd=ROOT,
    ).stdout
    assert re.search(r"goal: tag\+check < 5% of the default encode at 8 bits: \d+\.\d+%", out)


def test_the_config_and_trace_modules_and_the_replayer_load_without_torch():
    """Reading a config or a trace, and replaying one on a link, need no torch (2.5 s to
    import): a fresh interpreter, so that other tests' imports do not count."""
    check = ("import sys, quantpipe_core.config, quantpipe_core.trace, emulation.replay; "
             "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_docs_copies_of_the_default_config_are_what_the_command_prints():
    """docs/config.md and docs/index.md show the default config as
    ``python -m sim.run --print-default-config`` prints it (scripts/default_config_docs.py
    rewrites them), and the command prints `default_toml()`."""
    from quantpipe_core.config import default_toml

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import default_config_docs as docs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    printed = docs.printed_default()
    assert printed == default_toml()
    for page in docs.COPIES:
        found = docs.copies(page.read_text())
        assert found, f"{page.name} has no copy of the default config"
        assert all(copy == printed for copy in found), (
            f"{page.name}: stale default config; run .venv/bin/python "
            "scripts/default_config_docs.py")
