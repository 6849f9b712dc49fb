"""Shares of the offline optimum from `sim.compare` runs, per pipeline (docs/policies.md).

    .venv/bin/python benchmarks/held_out_shares.py minilm-2=runs/a minilm-2=runs/b digits-vit=...

Each argument is ``PIPELINE=FOLDER`` (repeat a pipeline for each of its folders), a folder that
`python -m sim.compare` wrote with ``optimal`` among its policies. Per pipeline and policy, over
the traces whose optimum is above zero (elsewhere every policy's queue grows without bound and
a share means nothing): mean utility over mean optimum, and the share of traces on which the
policy reached 90 % of that trace's optimum; and the mean utility over all traces.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str]) -> None:
    rows: dict[str, list[dict]] = defaultdict(list)
    for argument in argv:
        pipeline, _, folder = argument.partition("=")
        with open(Path(folder) / "results.csv") as table:
            rows[pipeline] += [r for r in csv.DictReader(table) if r["training"] == "False"]
    print("| pipeline | policy | mean utility / mean optimum | >= 90 % of optimum | "
          "mean utility, all traces |")
    print("|---|---|---|---|---|")
    for pipeline, runs in rows.items():
        policies = list(dict.fromkeys(r["policy"] for r in runs if r["policy"] != "optimal"))
        for policy in policies:
            mine = [r for r in runs if r["policy"] == policy]
            scored = [r for r in mine if float(r["optimum"]) > 0]
            share = (sum(float(r["utility_value"]) for r in scored)
                     / sum(float(r["optimum"]) for r in scored))
            near = sum(float(r["utility_value"]) >= 0.9 * float(r["optimum"]) for r in scored)
            mean = sum(float(r["utility_value"]) for r in mine) / len(mine)
            print(f"| {pipeline} | {policy} | {share:.3f} ({len(scored)} traces) | "
                  f"{near / len(scored):.0%} | {mean:.3f} ({len(mine)} traces) |")


if __name__ == "__main__":
    main(sys.argv[1:])
