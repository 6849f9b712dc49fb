"""Measure accuracy profiles: the model's output quality with the activation at a cut quantized.

    python -m quantpipe_core.evaluate --model digits-vit --cuts all \\
        --bits 2,3,4,6,8,16 --codecs minmax/none/tensor,ds-aciq/hadamard/auto

For each cut, codec scheme (a `quantpipe_core.quant.Codec` label: clipping method, transform,
granularity, outlier channels) and bitwidth, every microbatch's carry at that cut goes through
the real codec (encode, decode) and the rest of the model runs on what arrives. Writes
``OUT/MODEL.json`` (the profile the simulator and policies read; schema in
`quantpipe_core.profiles.accuracy`) and ``OUT/MODEL.md`` (tables with bootstrap standard errors,
and paired differences between DS-ACIQ and the other methods with the same options).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from quantpipe_core.cli import (
    ArgumentParser,
    bits_list,
    codec_list,
    fail,
    int_at_least,
    name_list,
    nonnegative_int,
    positive_int,
    writable_out_dir,
)
from quantpipe_core.models import Carry, StagedModel, load_model
from quantpipe_core.models.carry import through_link
from quantpipe_core.names import bits_rule
from quantpipe_core.profiles.accuracy import SCHEMA
from quantpipe_core.profiles.files import profile_stem, read_profile
from quantpipe_core.quant import Codec
from quantpipe_core.tasks import Task, inputs_in, sample_count, task_for

DEFAULT_BITS = (2, 3, 4, 6, 8, 16)
# the methods profiled by default (percentile and mse only on request: the mse grid is slow)
PROFILED_METHODS = ("minmax", "aciq", "ds-aciq")
# the schemes profiled by default: the plain methods as version 1 sent them, and the same methods
# with the default options (Hadamard rotation, automatic granularity)
DEFAULT_CODECS = tuple(
    f"{method}/{options}" for options in ("none/tensor", "hadamard/auto")
    for method in PROFILED_METHODS
)
# --combine measures schemes of these methods at these bitwidths: where the drops are large
COMBINED_METHODS = PROFILED_METHODS
COMBINED_MAX_BITS = 4


@dataclass(frozen=True)
class Resampler:
    """Bootstrap over inputs: the same resamples for every setting, so differences are paired."""

    indices: np.ndarray  # (resamples, samples)

    @classmethod
    def make(cls, samples: int, resamples: int, seed: int) -> Resampler:
        rng = np.random.default_rng(seed)
        return cls(rng.integers(0, samples, size=(resamples, samples)))

    def stderr(self, scores: np.ndarray) -> float:
        return float(scores[self.indices].mean(axis=1).std(ddof=1))


class CutEvaluator:
    """Scores quantization at one or more cuts, reusing the float32 prefix up to the first cut."""

    def __init__(self, model: StagedModel, task: Task, cuts: Sequence[str]) -> None:
        self.model, self.task = model, task
        self.indices = sorted(model.cut_index(c) for c in cuts)
        with torch.no_grad():
            self.prefix = [model.run(mb, 0, self.indices[0] + 1) for mb in task.microbatches]

    def scores(self, bits: int, codec: str) -> dict[str, np.ndarray]:
        outputs = [self._finish(carry, bits, codec) for carry in self.prefix]
        return self.task.scores(torch.cat(outputs))

    def _finish(self, carry: Carry, bits: int, codec: str) -> torch.Tensor:
        bounds = [*self.indices, len(self.model.unit_names) - 1]
        with torch.no_grad():
            for here, following in pairwise(bounds):
                carry = through_link(carry, bits, codec)
                carry = self.model.run(carry, here + 1, following + 1)
        return carry["hidden"]


def evaluate(
    model: StagedModel,
    task: Task,
    cuts: Sequence[str],
    bits: Sequence[int],
    codecs: Sequence[str],
    *,
    combine: Sequence[str] = (),
    resamples: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The profile dictionary (see `quantpipe_core.profiles.accuracy`) for these settings; the
    profile is keyed by each codec's full label."""
    methods = [Codec.parse(c).label for c in codecs]
    resampler = Resampler.make(sample_count(task), resamples, seed)
    float32: dict[str, float] = {}
    values: dict[str, dict] = {m: {} for m in task.metrics}
    stderr: dict[str, dict] = {m: {} for m in task.metrics}
    per_input: dict[tuple[str, str, int], dict[str, np.ndarray]] = {}
    settings = [(c, m, b) for c in cuts for m in methods for b in bits]
    bar = tqdm(total=len(settings), desc=f"{model.name}", disable=not progress, unit="setting")
    for cut in cuts:
        evaluator = CutEvaluator(model, task, [cut])
        if not float32:  # 32 bits sends the carry as it is: the same at every cut
            unquantized = evaluator.scores(32, methods[0])
            float32 = {metric: float(s.mean()) for metric, s in unquantized.items()}
        for method in methods:
            for b in bits:
                bar.set_postfix_str(f"{cut} {method} {b}b")
                scores = evaluator.scores(b, method)
                per_input[cut, method, b] = scores
                for metric, s in scores.items():
                    cell = values[metric].setdefault(cut, {}).setdefault(method, {})
                    cell[str(b)] = round(float(s.mean()), 6)
                    error = stderr[metric].setdefault(cut, {}).setdefault(method, {})
                    error[str(b)] = round(resampler.stderr(s), 6)
                bar.update()
    bar.close()
    combined = [
        combined_case(model, task, combine, b, m, values, float32)
        for m in methods if Codec.parse(m).method in COMBINED_METHODS
        for b in bits if b <= COMBINED_MAX_BITS
    ] if combine else []
    return {
        "schema": SCHEMA,
        "model": model.name,
        "metric": task.metric,
        "float32": float32,
        "microbatch": inputs_in(task.microbatches[0]),
        "samples": sample_count(task),
        "data": task.data,
        "resamples": resamples,
        "values": values,
        "stderr": stderr,
        "differences": differences(per_input, resampler, task.metrics),
        "combined": combined,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }


def differences(
    per_input: dict[tuple[str, str, int], dict[str, np.ndarray]],
    resampler: Resampler,
    metrics: Sequence[str],
) -> list[dict[str, Any]]:
    """DS-ACIQ minus each other method with the same options, at each cut and bitwidth, with
    paired bootstrap errors."""
    rows = []
    for (cut, method, bits), scores in per_input.items():
        codec = Codec.parse(method)
        if codec.method != "ds-aciq":
            continue
        for other in (codec.with_options(method=m).label for m in ("aciq", "minmax")):
            if (cut, other, bits) not in per_input:
                continue
            row: dict[str, Any] = {"cut": cut, "bits": bits, "codec": method, "versus": other}
            for metric in metrics:
                delta = scores[metric] - per_input[cut, other, bits][metric]
                row[metric] = round(float(delta.mean()), 6)
                row[f"{metric}_stderr"] = round(resampler.stderr(delta), 6)
            rows.append(row)
    return rows


def combined_case(
    model: StagedModel,
    task: Task,
    cuts: Sequence[str],
    bits: int,
    method: str,
    values: dict[str, dict],
    float32: dict[str, float],
) -> dict[str, Any]:
    """Quantize at every cut in `cuts` at once; compare with the sum of the single-cut drops."""
    scores = CutEvaluator(model, task, cuts).scores(bits, method)
    case: dict[str, Any] = {"cuts": list(cuts), "method": method, "bits": bits}
    for metric, s in scores.items():
        singles = [values[metric].get(c, {}).get(method, {}).get(str(bits)) for c in cuts]
        predicted = None
        if None not in singles:
            predicted = round(float32[metric] - sum(float32[metric] - v for v in singles), 6)
        case[metric] = {"measured": round(float(s.mean()), 6), "additive": predicted}
    return case


def markdown(profile: dict[str, Any]) -> str:
    """Tables of the profile for people: one per metric and cut, then the paired differences."""
    lines = [
        f"# Accuracy profile: {profile['model']}",
        "",
        f"Data: {profile['data']}. Microbatch {profile['microbatch']}, "
        f"{profile['resamples']} bootstrap resamples for the standard errors (±). Methods are "
        "codec labels: clipping method / transform / granularity. Float32: "
        + ", ".join(f"{m} {v:.4f}" for m, v in profile["float32"].items())
        + f". Created {profile['created']}.",
        "",
    ]
    if "command" in profile:
        lines += [f"Command: `{profile['command']}`", ""]
    for metric, cuts in profile["values"].items():
        for cut, methods in cuts.items():
            bits = list(next(iter(methods.values())))
            lines += [f"## {metric} at cut `{cut}`", ""]
            lines += ["| method | " + " | ".join(f"{b} bits" for b in bits) + " |"]
            lines += ["|---|" + "---|" * len(bits)]
            for method, row in methods.items():
                errors = profile["stderr"][metric][cut][method]
                cells = [f"{row[b]:.4f} ± {errors[b]:.4f}" for b in bits]
                lines += [f"| {method} | " + " | ".join(cells) + " |"]
            lines += [""]
    if profile["differences"]:
        metric = profile["metric"]
        lines += [f"## DS-ACIQ minus other methods ({metric}, paired bootstrap ±)", ""]
        lines += ["| cut | bits | ds-aciq as | versus | difference |", "|---|---|---|---|---|"]
        for row in profile["differences"]:
            if row["bits"] <= 4:
                lines += [
                    f"| {row['cut']} | {row['bits']} | {row['codec']} | {row['versus']} | "
                    f"{row[metric]:+.4f} ± {row[metric + '_stderr']:.4f} |"
                ]
        lines += [""]
    if profile["combined"]:
        lines += ["## Several cuts at once: measured against the additive rule", ""]
        lines += ["| cuts | method | bits | metric | measured | additive |"]
        lines += ["|---|---|---|---|---|---|"]
        for case in profile["combined"]:
            for metric in profile["float32"]:
                m = case[metric]
                additive = "n/a" if m["additive"] is None else f"{m['additive']:.4f}"
                lines += [
                    f"| {', '.join(case['cuts'])} | {case['method']} | {case['bits']} | {metric} "
                    f"| {m['measured']:.4f} | {additive} |"
                ]
        lines += [""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m quantpipe_core.evaluate",
        description="Measure how a model's accuracy falls when the activation at a cut is "
        "quantized, for each clipping method and bitwidth. Writes OUT/MODEL.json (the accuracy "
        "profile the simulator reads) and OUT/MODEL.md.",
    )
    parser.add_argument("--model", default="digits-vit",
                        help="digits-vit, minilm, or a Hugging Face folder (default digits-vit)")
    parser.add_argument("--cuts", type=name_list, default=["all"],
                        help="comma-separated cut ids (e.g. block1.gelu,block1.out) or 'all'")
    parser.add_argument("--bits", type=bits_list(allow_float=False), default=list(DEFAULT_BITS),
                        help=f"bitwidths, {bits_rule(allow_float=False)} (default 2,3,4,6,8,16)")
    parser.add_argument("--codecs", type=codec_list, default=list(DEFAULT_CODECS),
                        help="codec labels, method[/transform[/granularity[/oK]]], e.g. "
                        "ds-aciq/hadamard/auto (default: minmax, aciq and ds-aciq, each "
                        "with none/tensor and with hadamard/auto)")
    parser.add_argument("--microbatch", type=positive_int, default=8,
                        help="inputs per microbatch, >= 1 (8)")
    parser.add_argument("--samples", type=positive_int, default=None,
                        help="score only the first N >= 1 inputs (default: all)")
    parser.add_argument("--skip", type=nonnegative_int, default=0,
                        help="leave out the first N inputs, e.g. those a codec was chosen on, "
                        "to score on held-out ones (default 0)")
    parser.add_argument("--combine", type=name_list, default=[],
                        help="also quantize these cuts all at once (minmax, aciq, ds-aciq at "
                        "bits <= 4) and compare with the additive rule")
    parser.add_argument("--resamples", type=int_at_least(2), default=200,
                        help="bootstrap resamples, >= 2 for a standard error (200)")
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="bootstrap seed (0)")
    parser.add_argument("--threads", type=positive_int, default=1,
                        help="torch threads (default 1: small tensors run faster on one)")
    parser.add_argument("--out", type=writable_out_dir, default="runs/accuracy",
                        help="output folder (default runs/accuracy)")
    parser.add_argument("--merge", nargs="+", metavar="PROFILE.json",
                        help="measure nothing: merge these profiles of one model (e.g. cuts "
                        "measured by parallel runs) into OUT/MODEL.json")
    return parser.parse_args(argv)


def merge(profiles: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One profile from several runs on the same model, data and settings (e.g. cuts measured in
    parallel processes); refuses runs that cannot be compared."""
    first = profiles[0]
    same = ("model", "metric", "float32", "microbatch", "samples", "data", "resamples")
    for other in profiles[1:]:
        if differing := [key for key in same if other.get(key) != first.get(key)]:
            raise ValueError(f"cannot merge profiles that differ in {', '.join(differing)}")
    merged = {**first, "values": {}, "stderr": {}, "differences": [], "combined": []}
    for profile in profiles:
        for table in ("values", "stderr"):
            for metric, cuts in profile[table].items():
                for cut, codecs in cuts.items():
                    merged[table].setdefault(metric, {}).setdefault(cut, {}).update(codecs)
        merged["differences"] += profile["differences"]
        merged["combined"] += profile["combined"]
    merged["differences"] = _last_of_each(merged["differences"], ("cut", "bits", "codec", "versus"))
    merged["combined"] = _last_of_each(merged["combined"], ("cuts", "method", "bits"))
    merged["command"] = " && ".join(p["command"] for p in profiles if "command" in p)
    return merged


def _last_of_each(rows: list[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """`rows` with one row per value of `keys` (runs that measured a case twice: the later)."""
    kept: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept[json.dumps([row[key] for key in keys])] = row
    return list(kept.values())


def write_profile(profile: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = profile_stem(profile["model"])
    (out / f"{stem}.json").write_text(json.dumps(profile, indent=1) + "\n")
    (out / f"{stem}.md").write_text(markdown(profile))
    print(f"wrote {out / stem}.json and .md")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.merge:
        try:
            profiles = [read_profile(path, SCHEMA, "accuracy") for path in args.merge]
            write_profile(merge(profiles), args.out)
        except (OSError, ValueError, KeyError) as error:
            return fail("evaluate", f"--merge: {error}")
        return 0
    torch.set_num_threads(args.threads)
    try:
        model = load_model(args.model)
        cuts = model.cut_ids if args.cuts == ["all"] else args.cuts
        for cut in [*cuts, *args.combine]:
            model.cut_index(cut)
        task = task_for(model, args.microbatch, args.samples, args.skip)
    except ValueError as error:
        return fail("evaluate", str(error))
    profile = evaluate(
        model, task, cuts, args.bits, args.codecs,
        combine=args.combine, resamples=args.resamples, seed=args.seed,
    )
    profile["command"] = "python -m quantpipe_core.evaluate " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_profile(profile, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
