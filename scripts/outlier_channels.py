"""Why DS-ACIQ loses to ACIQ at 2-3 bits on MiniLM: where each clip range puts its error.

For real MiniLM activations at a cut, and each of ACIQ and DS-ACIQ: the spread of the clip range
across microbatches, the quantization MSE on real tokens, how much of the non-outlier channels'
error is clipping error, and the output's cosine to float32 (a) as sent, (b) with the few
outlier channels sent exactly, and (c) with the other method's values in the outlier channels.

    .venv/bin/python scripts/outlier_channels.py [--cut block2.out] [--bits 2,3,4] [--batches 64]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F

from quantpipe_core.cli import int_list
from quantpipe_core.models import Carry, StagedModel, load_model
from quantpipe_core.models.carry import through_link
from quantpipe_core.quant import clip_range
from quantpipe_core.tasks import SentenceFidelity

METHODS = ("aciq", "ds-aciq")


def output_cosine(
    model: StagedModel, start: int, carries: list[Carry], hidden: list[torch.Tensor],
    reference: torch.Tensor,
) -> float:
    """Mean cosine of the model's outputs, given `hidden` at the cut, to the float32 outputs."""
    with torch.no_grad():
        outputs = [
            model.run({**c, "hidden": h}, start)["hidden"]
            for c, h in zip(carries, hidden, strict=True)
        ]
    return F.cosine_similarity(torch.cat(outputs), reference).mean().item()


def with_channels(
    target: list[torch.Tensor], source: list[torch.Tensor], channels: torch.Tensor
) -> list[torch.Tensor]:
    """`target` with `channels` replaced by `source`'s values."""
    mixed = []
    for t, s in zip(target, source, strict=True):
        m = t.clone()
        m[..., channels] = s[..., channels]
        mixed.append(m)
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--cut", default="block2.out")
    parser.add_argument("--bits", type=int_list, default=[2, 3, 4])
    parser.add_argument("--batches", type=int, default=64, help="microbatches of 8 sentences")
    parser.add_argument("--outliers", type=int, default=4, help="channels counted as outliers")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.model)
    task = SentenceFidelity(model, 8, samples=8 * args.batches)
    start = model.cut_index(args.cut) + 1
    with torch.no_grad():
        carries = [model.run(mb, 0, start) for mb in task.microbatches]
        reference = torch.cat([model.run(c, start)["hidden"] for c in carries])
    real = torch.cat([c["hidden"][c["mask"] > 0] for c in carries])
    peak = real.abs().amax(0)
    outliers = peak.argsort(descending=True)[: args.outliers]
    others = torch.ones(real.shape[1], dtype=torch.bool)
    others[outliers] = False
    exact = [c["hidden"] for c in carries]
    print(f"{args.model} at {args.cut}: {real.shape[0]} real tokens x {real.shape[1]} channels; "
          f"outlier channels' |max| {[round(v, 2) for v in peak[outliers].tolist()]}, "
          f"median channel {peak.median():.2f}")
    print("bits method   range sd (lo, hi)  MSE     clip share  cosine  outliers exact  "
          "other method's outliers")
    for bits in args.bits:
        sent = {m: [through_link(c, bits, f"{m}/none/tensor")["hidden"] for c in carries]
                for m in METHODS}  # the plain codec (no rotation, one range) this analyses
        for method, other in (METHODS, METHODS[::-1]):
            ranges = torch.tensor([clip_range(c["hidden"], bits, method) for c in carries])
            clip_err = round_err = 0.0
            errors = []
            for c, h, (lo, hi) in zip(carries, sent[method], ranges.tolist(), strict=True):
                real_tokens = c["mask"] > 0
                x = c["hidden"][real_tokens]
                error = h[real_tokens] - x
                errors.append(error)
                outside = (x[:, others] < lo) | (x[:, others] > hi)
                clip_err += error[:, others][outside].square().sum().item()
                round_err += error[:, others][~outside].square().sum().item()
            mse = torch.cat(errors).square().mean()
            cosines = [
                output_cosine(model, start, carries, hidden, reference)
                for hidden in (
                    sent[method],
                    with_channels(sent[method], exact, outliers),
                    with_channels(sent[method], sent[other], outliers),
                )
            ]
            print(
                f"{bits:>4} {method:<8} ({ranges[:, 0].std():.2f}, {ranges[:, 1].std():.2f})"
                f"        {mse:.4f}  {clip_err / (clip_err + round_err):9.1%}  "
                f"{cosines[0]:.4f}  {cosines[1]:.4f}          {cosines[2]:.4f}"
            )

if __name__ == "__main__":
    main()
