"""How closely a simulated run predicts the emulated one, window by window.

Windows are matched by link and index (each is the same ``policy.window`` microbatches in
both runs). The last window of a link in either run is left out: it ends with the run, so its
rate covers a partial window. Two figures, with the issue's thresholds:

- ``rate_error_median``: median over windows of |emulated - simulated| / simulated delivered
  items/s (`windows.csv`'s ``delivered_items_per_s``); agreement needs <= 0.10;
- ``same_bits_share``: share of windows sent at the same (mean) bitwidth; agreement needs >= 0.80.

``measured_over_trace_by_bits`` helps find why they differ: how the rate each sender measured
compares with the trace, by bitwidth.

``python -m emulation.agreement EMULATED_DIR SIMULATED_DIR [--out DIR]`` recomputes them
from two result folders.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quantpipe_core.cli import ArgumentParser, fail, writable_out_dir
from quantpipe_core.formatting import percent
from quantpipe_core.results import read_windows

RATE_ERROR_LIMIT = 0.10
SAME_BITS_LIMIT = 0.80


class WindowsError(ValueError):
    """A ``windows.csv`` that cannot be read; the message names it."""


def windows_by_key(folder: Path) -> dict[tuple[int, int], dict[str, float | None]]:
    """``windows.csv`` of a result folder, keyed by (link, window index); `WindowsError` if it
    is not a readable one (not text, not numbers, no link or window_index column)."""
    path = folder / "windows.csv"
    try:
        return {(int(row["link"]), int(row["window_index"])): row for row in read_windows(path)}
    except (UnicodeDecodeError, ValueError, TypeError) as error:
        raise WindowsError(f"{path}: not a readable windows.csv: {error}") from None
    except KeyError as error:
        raise WindowsError(f"{path}: not a windows.csv: no {error} column") from None


def matched_windows(
    emulated: dict[tuple[int, int], dict], simulated: dict[tuple[int, int], dict]
) -> list[tuple[int, int]]:
    """(link, index) of the windows both runs completed, without each link's last one."""
    keys = []
    for link in sorted({link for link, _ in emulated} & {link for link, _ in simulated}):
        last = min(max(i for k, i in emulated if k == link), max(i for k, i in simulated
                                                                   if k == link))
        keys += [(link, i) for i in range(last) if (link, i) in emulated and (link, i) in simulated]
    return keys


def agreement(emulated_dir: Path, simulated_dir: Path) -> dict[str, Any]:
    """The two figures overall and per link, the windows they cover, and pass/fail."""
    emulated, simulated = windows_by_key(emulated_dir), windows_by_key(simulated_dir)
    keys = matched_windows(emulated, simulated)

    def figures(subset: Sequence[tuple[int, int]]) -> dict[str, Any]:
        errors = [
            abs(emulated[k]["delivered_items_per_s"] - simulated[k]["delivered_items_per_s"])
            / simulated[k]["delivered_items_per_s"]
            for k in subset
            if emulated[k]["delivered_items_per_s"] is not None
            and simulated[k]["delivered_items_per_s"]
        ]
        same = [abs(emulated[k]["bits"] - simulated[k]["bits"]) < 1e-9 for k in subset]
        return {
            "windows": len(subset),
            "rate_error_median": float(np.median(errors)) if errors else None,
            "rate_error_p90": float(np.percentile(errors, 90)) if errors else None,
            "same_bits_share": float(np.mean(same)) if same else None,
        }

    result = figures(keys)
    result["measured_over_trace_by_bits"] = {
        "emulated": measured_over_trace(emulated), "simulated": measured_over_trace(simulated)
    }
    result["links"] = [
        {"link": link, **figures([k for k in keys if k[0] == link])}
        for link in sorted({k[0] for k in keys})
    ]
    result["thresholds"] = {"rate_error_median_max": RATE_ERROR_LIMIT,
                            "same_bits_share_min": SAME_BITS_LIMIT}
    result["rate_agrees"] = (result["rate_error_median"] is not None
                             and result["rate_error_median"] <= RATE_ERROR_LIMIT)
    result["bits_agree"] = (result["same_bits_share"] is not None
                            and result["same_bits_share"] >= SAME_BITS_LIMIT)
    return result


def measured_over_trace(windows: dict[tuple[int, int], dict]) -> dict[str, float]:
    """Median of the sender's measured Mbit/s over the trace's mean rate, by bitwidth sent: the
    measurement a policy gets at window ``i`` covers window ``i - 1``'s transfers. Above 1, the
    link delivered faster than its trace (a burst after idling); below, slower (headers)."""
    ratios: dict[float, list[float]] = {}
    for (link, index), row in windows.items():
        previous = windows.get((link, index - 1))
        if previous and row["measured_mbps"] and previous["trace_mbps"]:
            ratios.setdefault(previous["bits"], []).append(
                row["measured_mbps"] / previous["trace_mbps"])
    return {f"{bits:g}": round(float(np.median(values)), 3)
            for bits, values in sorted(ratios.items())}


def plot_overlay(path: Path, emulated_dir: Path, simulated_dir: Path, title: str = "") -> None:
    """Per link: link rates (trace, measured by each run), bits, and delivered items/s per
    window, emulated against simulated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"emulated": windows_by_key(emulated_dir),
            "simulated": windows_by_key(simulated_dir)}
    links = sorted({link for link, _ in runs["simulated"]})
    fig, axes = plt.subplots(3, len(links), figsize=(6 + 4 * len(links), 7), sharex=True,
                             squeeze=False)
    styles = {"emulated": {"color": "tab:red"}, "simulated": {"color": "tab:blue",
                                                              "linestyle": "--"}}
    for column, link in enumerate(links):
        top, middle, bottom = axes[:, column]
        for name, windows in runs.items():
            rows = [windows[k] for k in sorted(windows) if k[0] == link]
            t = [row["t_start_s"] for row in rows]
            if name == "simulated":
                top.step(t, [row["trace_mbps"] for row in rows], where="post", color="grey",
                         label="trace")
            top.step(t, [row["measured_mbps"] for row in rows], where="post",
                     label=f"{name} measured", **styles[name])
            middle.step(t, [row["bits"] for row in rows], where="post", label=name,
                        **styles[name])
            bottom.step(t, [row["delivered_items_per_s"] for row in rows], where="post",
                        label=name, **styles[name])
        top.set_title(f"link {link}")
        top.set_ylabel("Mbit/s")
        middle.set_ylabel("bits")
        bottom.set_ylabel("delivered items/s")
        bottom.set_xlabel("time (s)")
        for ax in (top, middle, bottom):
            ax.grid(alpha=0.3)
            ax.legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_agreement(out: Path, emulated_dir: Path, simulated_dir: Path,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``agreement.json`` and ``agreement.png`` in `out` (made if missing); the agreement
    figures."""
    result = agreement(emulated_dir, simulated_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.update(extra or {})
    (out / "agreement.json").write_text(json.dumps(result, indent=2) + "\n")
    title = (f"emulated vs simulated: rate error median "
             f"{percent(result['rate_error_median'], 1)}, "
             f"same bits {percent(result['same_bits_share'], 1)} of windows")
    plot_overlay(out / "agreement.png", emulated_dir, simulated_dir, title)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m emulation.agreement",
        description="Compare an emulated run with a simulated one, window by window; write "
        "agreement.json and agreement.png.",
    )
    parser.add_argument("emulated", type=Path, help="result folder of the emulated run")
    parser.add_argument("simulated", type=Path, help="result folder of the simulated run")
    parser.add_argument("--out", type=writable_out_dir, default=None,
                        help="where to write (default: the emulated run's folder)")
    args = parser.parse_args(argv)
    for folder in (args.emulated, args.simulated):
        if not (folder / "windows.csv").is_file():
            return fail("emulation.agreement", f"{folder} has no windows.csv")
    try:
        result = write_agreement(args.out or args.emulated, args.emulated, args.simulated)
    except WindowsError as error:
        return fail("emulation.agreement", str(error))
    print(f"rate error median {percent(result['rate_error_median'], 1)}, same bits "
          f"{percent(result['same_bits_share'], 1)} over {result['windows']} windows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
