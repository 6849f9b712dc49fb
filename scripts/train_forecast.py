"""Train the learned forecast the `fugu` policy plans with (`policy.LearnedForecast`).

    .venv/bin/python scripts/train_forecast.py --shared ../shared/traces [--out FILE]

Training traces only: the HSDPA Norway bus, car and ferry routes (`train` in
docs/reports/report.toml); every other trace is held out for the comparisons. Each trace is cut
into windows of each length in WINDOWS_S, at four offsets a quarter window apart, and its mean
rate taken per window: what a link that stays busy measures. Per window length and quantile
level, a linear model of ``log(next / last)`` on `forecast_features` of the ``LAGS + 1`` rates
before is fitted by quantile regression (iteratively reweighted least squares, deterministic).
Writes the coefficients (default: the shipped quantpipe_core/forecast.json) and prints, per
window length, the samples, the pinball loss against a model of the intercept alone (the
unconditional quantiles of the change), and the fitted median's and spread's coefficients.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from quantpipe_core.policy import LEARNED_FORECAST, forecast_features
from quantpipe_core.trace import load_trace

TRAIN = ("norway_bus_*", "norway_car_*", "norway_ferry_*")
WINDOWS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # the report's one-link pipelines: 0.5 s and 9.5 s
LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LAGS = 3
OFFSETS = 4  # window starts a quarter window apart
ITERATIONS = 200


def window_rates(path: Path, window_s: float, offset_s: float) -> np.ndarray:
    """Mean rate (Mbit/s) of each whole window of `window_s` from `offset_s` in one period."""
    trace = load_trace(path)
    count = int((trace.duration_s - offset_s) // window_s)
    starts = offset_s + window_s * np.arange(count)
    return np.array([trace.mean_mbps(t, t + window_s) for t in starts])


def samples(paths: list[Path], window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets (log of the next window's rate over the last) of every window."""
    rows, targets = [], []
    for path in paths:
        for k in range(OFFSETS):
            rates = np.maximum(window_rates(path, window_s, k * window_s / OFFSETS), 1e-9)
            for t in range(LAGS, len(rates) - 1):
                rows.append(forecast_features(rates[t - LAGS : t + 1], LAGS))
                targets.append(np.log(rates[t + 1] / rates[t]))
    return np.array(rows), np.array(targets)


def quantile_fit(x: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    """Linear quantile regression by iteratively reweighted least squares: each residual r
    weighted by ``level / |r|`` above the fit and ``(1 - level) / |r|`` below, so the weighted
    squares equal the pinball loss at the fixed point."""
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    for _ in range(ITERATIONS):
        residual = y - x @ coef
        weight = np.sqrt(np.where(residual >= 0, level, 1 - level) /
                         np.maximum(np.abs(residual), 1e-6))
        coef = np.linalg.lstsq(x * weight[:, None], y * weight, rcond=None)[0]
    return coef


def pinball(y: np.ndarray, predicted: np.ndarray, level: float) -> float:
    residual = y - predicted
    return float(np.mean(np.maximum(level * residual, (level - 1) * residual)))


def train(shared: Path) -> dict:
    """The model's JSON, fitted on the training traces under `shared`."""
    paths = sorted(p for pattern in TRAIN for p in (shared / "hsdpa-norway").glob(pattern))
    if not paths:
        raise SystemExit(f"no training traces under {shared / 'hsdpa-norway'}")
    coef, report = [], []
    for window_s in WINDOWS_S:
        x, y = samples(paths, window_s)
        fitted = [quantile_fit(x, y, level) for level in LEVELS]
        coef.append([[round(float(c), 6) for c in row] for row in fitted])
        learned = np.mean([pinball(y, x @ c, q) for c, q in zip(fitted, LEVELS, strict=True)])
        constant = np.mean([pinball(y, np.quantile(y, q), q) for q in LEVELS])
        report.append({"window_s": window_s, "samples": len(y),
                       "pinball_learned": round(float(learned), 5),
                       "pinball_constant": round(float(constant), 5)})
    return {"lags": LAGS, "levels": list(LEVELS), "windows_s": list(WINDOWS_S), "coef": coef,
            "features": ["1", *[f"log(last / lag {i})" for i in range(1, LAGS + 1)],
                         "mean |log change|"],
            "trained_on": [p.name for p in paths], "fit": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the shared traces folder")
    parser.add_argument("--out", type=Path, default=LEARNED_FORECAST)
    args = parser.parse_args()
    model = train(args.shared)
    args.out.write_text(json.dumps(model, indent=1) + "\n")
    median = LEVELS.index(0.5)
    for fit, coef in zip(model["fit"], model["coef"], strict=True):
        low, high = np.array(coef[0]), np.array(coef[-1])
        print(f"window {fit['window_s']:>4} s: {fit['samples']:>6} samples, pinball "
              f"{fit['pinball_learned']:.4f} (intercept only {fit['pinball_constant']:.4f}); "
              f"median {np.round(coef[median], 3).tolist()}; "
              f"q0.9 - q0.1 {np.round(high - low, 3).tolist()}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
