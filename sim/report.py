"""The policy-comparison reports of ``docs/reports/``, from one spec file:
``python -m sim.report docs/reports/report.toml --shared ../shared/traces --out docs/reports``.

The spec (TOML) names the policies, the training traces, the trace folders (each with a scale
factor per pipeline), the pipelines (a run config each), the clipping-method comparison and the
emulated cross-check cases. Every (pipeline, trace, policy) is simulated with `sim.comparison`
on one engine (local processes, or Ray with ``--backend ray``); each run's four files go under
``--runs`` (default ``runs/report``), and ``--out`` gets one page per pipeline with its plots and
an index (``README.md``) with the rankings by utility on the held-out traces, the clipping
methods and the cross-check.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import sys
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantpipe_core.cli import ArgumentParser, fail, writable_out_dir
from quantpipe_core.config import (
    SIM_ONLY_POLICIES,
    Config,
    ConfigError,
    Where,
    check_names,
    did_you_mean,
    load_config,
    read_toml,
)
from quantpipe_core.config.fields import Name, Names, Number, as_table, as_tables
from quantpipe_core.formatting import cell, count, percent
from quantpipe_core.names import CLIP_METHODS
from quantpipe_core.profiles import ComputeProfile, shipped_compute_profile
from sim.comparison import (
    DEFAULT_POLICIES,
    NEAR_OPTIMUM,
    POLICY_NOTES,
    RunFailed,
    compare,
    definitions,
    latency_slo,
    link_count,
    mean,
    optimum_cell,
    optimum_feasible,
    plots,
    ranking,
    report,
    trace_names,
    training_table,
    utility_cell,
    with_policy,
    without_optimal_reason,
)
from sim.engine import Engine, EngineError, add_engine_options, open_engine

TOP_KEYS = ("policies", "train", "folders", "pipelines", "clipping", "crosscheck")
PIPELINE_KEYS = ("name", "title", "config", "scales")
CLIPPING_KEYS = ("pipeline", "trace", "policies")
CROSSCHECK_KEYS = ("name", "args")


@dataclass(frozen=True)
class Pipeline:
    """One pipeline of the report: its config and the scale applied to each trace folder."""

    name: str
    title: str
    config: Config
    scales: dict[str, float]


@dataclass(frozen=True)
class Spec:
    """What a report covers (see `read_spec` for the file's fields)."""

    path: Path
    policies: list[str]
    train: list[str]  # patterns ``folder/file-glob`` of the traces policies may be tuned on
    folders: dict[str, Path]  # trace-folder name -> folder
    pipelines: list[Pipeline]
    clipping: list[dict[str, Any]]  # {pipeline, trace, policies}
    crosscheck: list[dict[str, Any]]  # {name, args}

    def traces(self, folder: str) -> list[Path]:
        return sorted(p for p in self.folders[folder].iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.suffix != ".md")

    def trace(self, name: str) -> tuple[str, Path]:
        """The folder and path of the trace whose file name is `name`."""
        for folder in self.folders:
            for path in self.traces(folder):
                if path.name == name:
                    return folder, path
        raise SpecError(f"{self.path}: no trace named {name!r} in {list(self.folders)}")

    def matches(self, pattern: str) -> list[Path]:
        """The traces a ``train`` pattern names: ``folder/file-glob``."""
        folder, _, glob = pattern.partition("/")
        return [p for p in self.traces(folder) if fnmatch.fnmatch(p.name, glob)]

    def training(self) -> list[Path]:
        """The training traces; every other trace is held out."""
        return sorted({p for pattern in self.train for p in self.matches(pattern)})

    def policies_for(self, entry: Pipeline) -> list[str]:
        """The spec's policies that can run on `entry`: `optimal` on one-link pipelines only."""
        feasible = optimum_feasible(entry.config)
        return [p for p in self.policies if p != "optimal" or feasible]


class SpecError(ConfigError):
    """A report spec that cannot run; the message names the file and the field."""


def read_spec(path: Path, shared: Path | None) -> Spec:
    """The spec at `path`. Trace folders may start with ``{shared}`` (the ``--shared`` folder);
    other relative paths start at the spec's folder. It is read with the config's machinery, so
    an unknown key is refused with the closest known one ("did you mean"), and a typo cannot
    silently leave a default in place."""
    try:
        return _read_spec(path, shared)
    except SpecError:
        raise
    except ConfigError as error:
        raise SpecError(str(error)) from None


def _read_spec(path: Path, shared: Path | None) -> Spec:
    data = read_toml(path)
    where = Where(str(path), path.resolve().parent)
    check_names(data, TOP_KEYS, where, "key")
    folders = {
        name: _folder(Name().read(text, where.key("folders").key(name)), shared, where)
        for name, text in as_table(data.get("folders", {}), where.key("folders")).items()
    }
    if missing := [str(p) for p in folders.values() if not p.is_dir()]:
        raise where.key("folders").error(f"no such trace folder: {', '.join(missing)}")
    pipelines = [
        _pipeline(entry, list(folders), where.key("pipelines").index(index))
        for index, entry in enumerate(as_tables(data.get("pipelines", []), where.key("pipelines")))
    ]
    if not pipelines:
        raise where.error("no [[pipelines]]: a report needs at least one")
    spec = Spec(
        path,
        list(Names().read(data.get("policies", DEFAULT_POLICIES), where.key("policies"))),
        list(Names().read(data.get("train", []), where.key("train"))),
        folders, pipelines,
        _cases(data, "clipping", CLIPPING_KEYS, ("pipeline", "trace"), where),
        _cases(data, "crosscheck", CROSSCHECK_KEYS, ("name", "args"), where),
    )
    for policy in spec.policies:
        for entry in pipelines:
            try:
                with_policy(entry.config, policy)
            except (ConfigError, ValueError) as error:
                raise where.key("policies").error(str(error)) from None
    for index, pattern in enumerate(spec.train):
        name = pattern.partition("/")[0]
        here = where.key("train").index(index)
        if name not in folders:
            raise here.error(f"{pattern!r} does not start with a trace folder "
                             f"(folder/file-glob){did_you_mean(name, list(folders))}")
        if not spec.matches(pattern):
            raise here.error(f"no trace matches {pattern!r}")
    for case in spec.clipping:
        pipeline(spec, case["pipeline"])
        spec.trace(case["trace"])
    return spec


def _folder(text: str, shared: Path | None, where: Where) -> Path:
    """A trace folder: ``{shared}/...`` under --shared, else relative to the spec's folder."""
    if text.startswith("{shared}"):
        if shared is None:
            raise where.key("folders").error(f"{text!r} needs --shared (the shared traces)")
        return shared / text.removeprefix("{shared}").lstrip("/")
    return where.path(text)


def _pipeline(entry: Mapping[str, Any], folders: list[str], where: Where) -> Pipeline:
    """A ``[[pipelines]]`` entry: its name, title, run config and a scale per trace folder."""
    check_names(entry, PIPELINE_KEYS, where, "key")
    _require(entry, ("name", "config"), where)
    name = Name().read(entry["name"], where.key("name"))
    given = as_table(entry.get("scales", {}), where.key("scales"))
    check_names(given, folders, where.key("scales"), "trace folder")
    scales = {folder: Number(zero_ok=False).read(given.get(folder, 1.0),
                                                 where.key("scales").key(folder))
              for folder in folders}
    config_path = where.path(Name().read(entry["config"], where.key("config")))
    try:
        config = load_config(config_path)
    except ConfigError as error:
        raise where.error(f"pipeline {name}: {error}") from None
    return Pipeline(name, Name().read(entry.get("title", name), where.key("title")), config,
                    scales)


def _cases(data: Mapping[str, Any], key: str, known: Sequence[str], required: Sequence[str],
           where: Where) -> list[dict[str, Any]]:
    """The ``[[key]]`` entries, each with only `known` keys and every `required` one."""
    cases = []
    for index, case in enumerate(as_tables(data.get(key, []), where.key(key))):
        here = where.key(key).index(index)
        check_names(case, known, here, "key")
        _require(case, required, here)
        cases.append(dict(case))
    return cases


def _require(entry: Mapping[str, Any], keys: Sequence[str], where: Where) -> None:
    if missing := [key for key in keys if key not in entry]:
        raise where.error(f"needs {', '.join(repr(k) for k in missing)}")


def pipeline(spec: Spec, name: str) -> Pipeline:
    for entry in spec.pipelines:
        if entry.name == name:
            return entry
    names = [entry.name for entry in spec.pipelines]
    raise SpecError(f"{spec.path}: no pipeline named {name!r}{did_you_mean(name, names)} "
                    f"(known: {', '.join(names)})")


def check_only(spec: Spec, name: str) -> None:
    """``--only NAME`` names a pipeline of the spec, or a `SpecError` says which exist."""
    try:
        pipeline(spec, name)
    except SpecError as error:
        raise SpecError(f"--only: {error}") from None


def scaled(config: Config, scale: float) -> Config:
    return config.replace(**{"links.*.scale": scale})


def run_pipeline(spec: Spec, entry: Pipeline, runs: Path, out: Path, engine: Engine,
                 command: str) -> list[dict[str, Any]]:
    """Every trace and policy for one pipeline; its page and plots in ``out/<name>/``."""
    policies = spec.policies_for(entry)
    traces = [t for folder in spec.folders for t in spec.traces(folder)]
    name_of = dict(zip(traces, trace_names(traces), strict=True))
    training = {name_of[p] for p in spec.training() if p in name_of}
    rows: list[dict[str, Any]] = []
    for folder in spec.folders:
        mine = spec.traces(folder)
        config = scaled(entry.config, entry.scales[folder])
        rows += [dict(r, folder=folder, scale=entry.scales[folder],
                      training=r["trace"] in training)
                 for r in compare(config, mine, policies, runs / entry.name, engine,
                                  [name_of[t] for t in mine])]
    page = out / entry.name
    page.mkdir(parents=True, exist_ok=True)
    plots(rows, traces, policies, page, training)
    text = report(rows, traces, policies, command, training)
    scales = ", ".join(f"`{folder}` x{entry.scales[folder]:g}" for folder in spec.folders)
    intro = (f"# {entry.title}\n\nCuts: {', '.join(rows[0]['run']['cuts'])}; target "
             f"{rows[0]['target_rate_items_per_s']:.2f} items/s; trace scales: {scales}.\n")
    (page / "README.md").write_text(intro + text.split("\n", 1)[1])
    (page / "results.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "run"} for r in rows], indent=1) + "\n")
    return rows


def clipping_rows(spec: Spec, runs: Path, engine: Engine) -> list[dict[str, Any]]:
    """Each clipping method inside the adaptive pipeline along a trace, per case of the spec."""
    rows = []
    for case in spec.clipping:
        entry = pipeline(spec, case["pipeline"])
        folder, trace = spec.trace(case["trace"])
        for method in CLIP_METHODS:
            config = scaled(entry.config, entry.scales[folder]).replace(
                **{"quant.clip": method})
            for row in compare(config, [trace], case.get("policies", ["quantpipe", "mpc"]),
                               runs / "clipping" / entry.name / method, engine):
                rows.append(dict(row, pipeline=entry.title, method=method, folder=folder,
                                 scale=entry.scales[folder],
                                 encode_ms=encode_ms(config, row["run"]["cuts"])))
    return rows


def encode_ms(config: Config, cuts: Sequence[str]) -> float | None:
    """Milliseconds the first device's compute profile gives for encoding one microbatch at the
    first cut with the config's codec at its largest allowed bitwidth: what a clipping method
    costs the sending stage. None without a cut or a profile that measured the codec."""
    device = config.devices[0]
    if not cuts:
        return None
    try:
        profile = (ComputeProfile.from_file(device.profile) if device.profile
                   else shipped_compute_profile(config.model.name))
        if profile is None:
            return None
        seconds = profile.scaled(device.speed).encode_s(
            cuts[0], config.quant.codec, max(config.quant.allowed_bits),
            config.model.microbatch, device.threads)
    except ValueError:
        return None
    return 1000 * seconds


def index(spec: Spec, results: dict[str, list[dict[str, Any]]], clipping: list[dict[str, Any]],
          crosscheck: list[str], command: str) -> str:
    """The index page: how it was made, which traces are for training, the rankings per
    pipeline, clipping, cross-check."""
    versions = next(iter(results.values()))[0]["run"]["versions"]
    lines = [
        "# Policy-comparison reports",
        "",
        f"Made by `{command}` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        "Every number and plot here comes from that command; the per-run files (timeline, "
        "windows, summary, plot) are under `runs/report/` after it runs.",
        "",
        "Policies: " + ", ".join(f"`{p}`" for p in spec.policies) + ". " + POLICY_NOTES
        + " `optimal` runs on one-link pipelines only: with more links the joint dynamic "
        "programme does not finish and the per-link bound (`sim.link_relaxation`) is loose, so "
        "those pipelines' shares of the optimum are empty.",
        "",
        "Trace folders: " + ", ".join(f"`{name}` ({count(len(spec.traces(name)), 'trace')})"
                                      for name in spec.folders) + ".",
        "",
        *split_section(spec),
        "## Pipelines",
        "",
        definitions([r for rows in results.values() for r in rows], "given per pipeline below")
        + " Each pipeline's ranking is over the "
        "held-out traces; its training traces have the smaller table under it. *Pareto* marks "
        f"the policies that no other one ({' and '.join(f'`{p}`' for p in SIM_ONLY_POLICIES)} "
        "aside: they read the trace's future) beats on both target met and quality "
        "(expected accuracy, or mean bits where the model has no accuracy profile), the ones "
        "worth choosing between on those two axes; the scatter plots them. Each pipeline's "
        "page has the per-trace tables with each policy's gap to optimal, and timelines of "
        "bits and delivered rate.",
        "",
    ]
    for entry in spec.pipelines:
        if entry.name in results:
            lines += pipeline_section(spec, entry, results[entry.name])
    lines += lossless_section(spec, results)
    if clipping:
        lines += clipping_section(clipping)
    if crosscheck:
        lines += crosscheck
    return "\n".join(lines) + "\n"


def lossless_twins(spec: Spec) -> list[tuple[Pipeline, Pipeline]]:
    """Pairs (bit-planes, coded) of pipelines whose configs differ only in ``quant.lossless``,
    on the same trace scales: the same pipeline with and without lossless coding."""
    def without_coder(entry: Pipeline) -> str:
        data = entry.config.to_dict()
        data["quant"].pop("lossless", None)
        return json.dumps([data, entry.scales], sort_keys=True, default=str)

    plain = {without_coder(e): e for e in spec.pipelines if e.config.quant.lossless == "none"}
    return [(plain[key], entry) for entry in spec.pipelines
            if entry.config.quant.lossless != "none" and (key := without_coder(entry)) in plain]


def lossless_section(spec: Spec, results: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each policy's mean utility per trace folder (held-out traces) without and with lossless
    coding, for every pair of `lossless_twins` that ran."""
    twins = [(a, b) for a, b in lossless_twins(spec) if a.name in results and b.name in results]
    if not twins:
        return []
    folders = list(spec.folders)
    lines = ["## With and without lossless coding", "",
             "Pipelines whose configs differ only in `[quant] lossless`, on the same scaled "
             "traces: each policy's mean utility over each folder's held-out traces, without -> "
             "with coding ([quantization.md](../quantization.md#lossless-coding)).", ""]
    for plain, coded in twins:
        lines += [f"### {plain.title}: `{plain.name}` -> `{coded.name}`", "",
                  "| policy | " + " | ".join(folders) + " | all held out |",
                  "|---|" + "---|" * (len(folders) + 1)]
        for policy in spec.policies_for(plain):
            cells = [f"{_mean_utility(results[plain.name], policy, f)} -> "
                     f"{_mean_utility(results[coded.name], policy, f)}"
                     for f in (*folders, None)]
            lines.append(f"| {policy} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _mean_utility(rows: Sequence[dict[str, Any]], policy: str, folder: str | None) -> str:
    """Mean utility of `policy` over the held-out traces of `folder` (all folders: None)."""
    return cell(mean([r["utility_value"] for r in rows if r["policy"] == policy
                      and not r["training"] and folder in (None, r["folder"])]), 3)


def split_section(spec: Spec) -> list[str]:
    """Which traces are for training and which are held out, and why."""
    lines = ["## Training and held-out traces", ""]
    if not spec.train:
        return [*lines, f"No training traces are named (`train` in {spec.path.name}): every "
                "ranking is over every trace, so a policy tuned on any of them is favoured.", ""]
    training = set(spec.training())

    def listing(held: bool) -> str:
        parts = []
        for folder in spec.folders:
            names = [p.name for p in spec.traces(folder) if (p in training) != held]
            if names:
                parts.append(f"`{folder}`: " + ", ".join(names))
        return "; ".join(parts)

    held_out = sum(len(spec.traces(f)) for f in spec.folders) - len(training)
    patterns = ", ".join(f"`{p}`" for p in spec.train)
    return [
        *lines,
        "A policy's parameters (thresholds, weights, windows, forecasts) may be tuned on the "
        "training traces only. Every ranking below is over the held-out traces, which no policy "
        "was tuned on, so it says how a policy does on links it has not seen; the training "
        "traces get a smaller table of their own, where a tuned policy is expected to look "
        "better.",
        "",
        f"- Training ({count(len(training), 'trace')}; `train` in {spec.path.name}: "
        f"{patterns}): {listing(held=False)}.",
        f"- Held out ({count(held_out, 'trace')}): {listing(held=True)}.",
        "",
    ]


def pipeline_section(spec: Spec, entry: Pipeline, rows: Sequence[dict[str, Any]]) -> list[str]:
    """One pipeline on the index (its `run_pipeline` rows): its ranking over the held-out
    traces, the Pareto marks, the scatter, and the smaller table over the training traces."""
    policies = spec.policies_for(entry)
    held = [r for r in rows if not r["training"]]
    trained = [r for r in rows if r["training"]]
    scales = ", ".join(f"{folder} x{entry.scales[folder]:g}" for folder in spec.folders)
    accuracy = any(r["expected_accuracy"] is not None for r in rows)
    quality = "expected accuracy" if accuracy else "mean bits (no accuracy profile)"
    near = percent(NEAR_OPTIMUM)
    lines = [
        f"### [{entry.title}]({entry.name}/README.md)",
        "",
        f"Trace scales: {scales}. Latency SLO: {latency_slo(rows)}. Mean over "
        f"{count(len({r['trace'] for r in held}), 'held-out trace')}:",
        "",
    ]
    if not optimum_feasible(entry.config):
        lines += [without_optimal_reason(link_count(entry.config)), ""]
    lines += [
        f"| rank | policy | utility [95 % CI] | share of optimum | >= {near} of optimum "
        f"| target met | {quality} | Pareto | p95 latency s | switches |",
        "|---" * 10 + "|",
    ]
    table = ranking(held, policies)
    front = pareto([(s.policy, s.target_met, s.quality) for s in table])
    for rank, s in enumerate(table, start=1):
        mine = [r for r in held if r["policy"] == s.policy]
        p95 = mean([r["latency_p95_s"] for r in mine])
        switches = mean([r["bits_switches"] for r in mine])
        lines.append(f"| {rank} | {s.policy} | {utility_cell(s)} "
                     f"| {optimum_cell(s.share_of_optimum)} | {optimum_cell(s.near_optimum, 2)} "
                     f"| {cell(s.target_met, 3)} | {cell(s.quality, 4)} "
                     f"| {'yes' if s.policy in front else ''} | {cell(p95, 2)} "
                     f"| {cell(switches, 1)} |")
    lines += ["", f"![{entry.name}]({entry.name}/scatter.png)", ""]
    if trained:
        lines += [f"Training traces ({count(len({r['trace'] for r in trained}), 'trace')}):",
                  "", *training_table(trained, policies, quality)]
    return lines


def pareto(table: Sequence[tuple[str, float | None, float | None]]) -> set[str]:
    """Policies (name, target met, quality) that no other one beats on both target met and
    quality (ties allowed); `SIM_ONLY_POLICIES`, which no real link can run, are left out."""
    known = [(p, m, q) for p, m, q in table
             if m is not None and q is not None and p not in SIM_ONLY_POLICIES]
    return {
        p for p, m, q in known
        if not any(m2 >= m and q2 >= q and (m2, q2) != (m, q) for _, m2, q2 in known)
    }


def clipping_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Clipping methods inside the adaptive pipeline",
        "",
        "The same pipeline and trace with each clipping method, the config's other codec "
        "options kept. A method changes no packet size, so `quantpipe` picks the same bits with "
        "every method unless a method's encode time limits the sending stage; `mpc` weighs the "
        "accuracy profile, so its bits may differ. Encode ms: one microbatch encoded at the "
        "first cut at the largest allowed bitwidth, from the first device's compute profile "
        "(n/a where it did not measure the method). Expected accuracy comes from the model's "
        "accuracy profile at each microbatch's bits; n/a where the profile did not measure that "
        "method with these options.",
        "",
        "| pipeline | trace | policy | method | encode ms | expected accuracy | mean bits "
        "| target met |",
        "|---" * 8 + "|",
    ]
    for row in rows:
        lines.append(
            f"| {row['pipeline']} | {row['trace']} x{row['scale']:g} | {row['policy']} "
            f"| {row['method']} | {cell(row['encode_ms'], 2)} "
            f"| {cell(row['expected_accuracy'], 4)} "
            f"| {cell(row['mean_bits'], 2)} | {cell(row['target_met_fraction'], 3)} |"
        )
    return [*lines, ""]


def crosscheck_section(spec: Spec, emulated: Path | None) -> list[str]:
    """Emulated next to simulated for the spec's cross-check cases (from `emulation.run`'s
    folders under `emulated`), or the commands that make them."""
    if not spec.crosscheck:
        return []
    lines = [
        "## Cross-check: emulated against simulated",
        "",
        "The same config and trace run by the simulator and by the real runtime in Mininet "
        "(`python -m emulation.run`, as root; see docs/emulation.md). Commands, from the "
        "repository root:",
        "",
        "```sh",
        *(f".venv/bin/python -m emulation.run {case['args']} --out runs/agreement/{case['name']}"
          for case in spec.crosscheck),
        "```",
        "",
    ]
    header = ("| case | run | utility | target met | items/s | mean bits | p95 latency s "
              "| switches | rate error (median) | same bits |")
    table = [header, "|---" * 10 + "|"]
    for case in spec.crosscheck:
        folder = emulated / case["name"] if emulated else None
        if folder is None or not (folder / "agreement.json").is_file():
            table.append(f"| {case['name']} | not run here | | | | | | | | |")
            continue
        agreement = json.loads((folder / "agreement.json").read_text())
        for run, path in (("emulated", folder), ("simulated", folder / "simulated")):
            s = json.loads((path / "summary.json").read_text())
            figures = (f"{percent(agreement['rate_error_median'], 1)} | "
                       f"{percent(agreement['same_bits_share'], 1)}" if run == "emulated"
                       else " | ")
            scored = (s.get("utility") or {}).get("value")  # runs before the utility: none
            table.append(
                f"| {case['name']} | {run} | {cell(scored, 4)} "
                f"| {cell(s['target_met_fraction'], 3)} "
                f"| {cell(s['throughput_items_per_s'], 1)} | {cell(s['mean_bits'], 2)} "
                f"| {cell(s['latency_p95_s'], 2)} | {s['bits_switches']} | {figures} |"
            )
    return [*lines, *table, ""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m sim.report",
        description="Simulate every pipeline, trace and policy of a report spec and write the "
        "policy-comparison pages (Markdown and plots).",
    )
    parser.add_argument("spec", type=Path, help="the report spec (e.g. docs/reports/report.toml)")
    parser.add_argument("--shared", type=Path, default=None,
                        help="the shared real traces (folders written {shared}/... in the spec)")
    parser.add_argument("--emulated", type=Path, default=None,
                        help="folder of emulation.run results for the cross-check cases "
                        "(default: leave them as commands)")
    parser.add_argument("--out", type=writable_out_dir, default="docs/reports",
                        help="where the pages go (default docs/reports)")
    parser.add_argument("--runs", type=writable_out_dir, default="runs/report",
                        help="where each run's files go (default runs/report)")
    add_engine_options(parser, jobs=2)
    parser.add_argument("--only", default=None, help="run only this pipeline (for a quick look)")
    args = parser.parse_args(argv)
    try:
        spec = read_spec(args.spec, args.shared)
        if args.only is not None:
            check_only(spec, args.only)
        engine = open_engine(args.backend, args.address, args.jobs)
    except (OSError, SpecError, EngineError) as error:
        return fail("sim.report", str(error))
    command = "python -m sim.report " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {}
    try:
        with closing(engine):
            for entry in spec.pipelines:
                if args.only in (None, entry.name):
                    print(f"== {entry.title}", flush=True)
                    results[entry.name] = run_pipeline(spec, entry, args.runs, args.out, engine,
                                                        command)
            clipping = clipping_rows(spec, args.runs, engine) if args.only is None else []
    except RunFailed as error:
        print(f"sim.report: {error}", file=sys.stderr)
        return 1
    text = index(spec, results, clipping, crosscheck_section(spec, args.emulated), command)
    (args.out / "README.md").write_text(text)
    print(f"wrote {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
