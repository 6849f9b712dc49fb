"""Measure lossless profiles: how much a coder shortens each cut's frames, and its time.

    python -m quantpipe_core.lossless_profile --model minilm

For every cut of the model, codec scheme and bitwidth, each of the task's first microbatches
(real sentences or digits, as the runtime sends them) is encoded with the coder and with
bit-planes: the ratio of their bytes is averaged over the microbatches. The coder's added time is
the difference of the two paths' medians, timed in turns on the first microbatch. Writes
``OUT/MODEL.json`` (schema in `quantpipe_core.profiles.lossless`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from quantpipe_core.cli import ArgumentParser, bits_list, codec_list, writable_out_dir
from quantpipe_core.heap import keep_large_allocations
from quantpipe_core.models import Carry, StagedModel, load_model
from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.names import LOSSLESS, bits_rule, values_label
from quantpipe_core.profile import machine
from quantpipe_core.profiles.files import write_profile
from quantpipe_core.profiles.lossless import SCHEMA
from quantpipe_core.tasks import task_for
from quantpipe_core.timing import medians_in_turns

DEFAULT_BITS = (2, 3, 4, 6, 8, 16)
# the schemes the shipped accuracy profiles measure (percentile and mse are slow to encode)
DEFAULT_CODECS = tuple(f"{method}/{options}" for options in ("none/tensor", "hadamard/auto")
                       for method in ("minmax", "aciq", "ds-aciq"))


def cut_entry(microbatches: Sequence[Carry], codec: str, coder: str, bits: int,
              repeats: int) -> dict[str, float]:
    """Ratio of coded to bit-plane frame bytes over `microbatches` (each the carry at one cut),
    and the coder's added encode and decode seconds on the first."""
    coded = f"{codec}+{coder}"
    frames = [(encode_carry(carry, bits, coded), encode_carry(carry, bits, codec))
              for carry in microbatches]
    ratios = [len(coded_frame) / len(plain_frame) for coded_frame, plain_frame in frames]
    first = microbatches[0]
    coded_frame, plain_frame = frames[0]
    seconds = medians_in_turns({
        "encode coded": lambda: encode_carry(first, bits, coded),
        "encode planes": lambda: encode_carry(first, bits, codec),
        "decode coded": lambda: decode_carry(coded_frame),
        "decode planes": lambda: decode_carry(plain_frame),
    }, repeats)
    return {"ratio": round(statistics.fmean(ratios), 5), "ratio_max": round(max(ratios), 5),
            "encode_s": round(max(seconds["encode coded"] - seconds["encode planes"], 0.0), 7),
            "decode_s": round(max(seconds["decode coded"] - seconds["decode planes"], 0.0), 7)}


def profile(model: StagedModel, codecs: Sequence[str], bits: Sequence[int], *, coder: str,
            microbatch: int, samples: int, skip: int, repeats: int,
            progress: bool = True) -> dict[str, Any]:
    """The lossless profile dictionary (see `quantpipe_core.profiles.lossless`)."""
    task = task_for(model, microbatch, samples, skip)
    cuts: dict[str, Any] = {}
    with torch.no_grad():
        for cut in tqdm(model.cut_ids, desc=model.name, unit="cut", disable=not progress):
            end = model.cut_index(cut) + 1
            carries = [model.run(inputs, 0, end) for inputs in task.microbatches]
            cuts[cut] = {codec: {str(b): cut_entry(carries, codec, coder, b, repeats)
                                 for b in bits} for codec in codecs}
    return {
        "schema": SCHEMA,
        "model": model.name,
        "coder": coder,
        "microbatch": microbatch,
        "tokens": model.tokens,
        "samples": sum(len(next(iter(m.values()))) for m in task.microbatches),
        "skip": skip,
        "data": getattr(task, "data", None),
        "machine": machine(),
        "repeats": repeats,
        "cuts": cuts,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m quantpipe_core.lossless_profile",
        description="Measure how much a lossless coder shortens each cut's frames on the "
        "model's real data, and the time it adds to encoding and decoding, on this machine. "
        "Writes OUT/MODEL.json, which the simulator reads for links whose codec label ends in "
        "+CODER.",
    )
    parser.add_argument("--model", default="minilm",
                        help="digits-vit, minilm or a Hugging Face folder (default minilm); "
                        "vit-base has no real data here")
    parser.add_argument("--coder", default="zstd", choices=LOSSLESS[1:],
                        help="the lossless coder (default zstd)")
    parser.add_argument("--codecs", type=codec_list, default=list(DEFAULT_CODECS),
                        help="codec labels without a coder (default: minmax, aciq and ds-aciq, "
                        "each with none/tensor and with hadamard/auto)")
    parser.add_argument("--bits", type=bits_list(allow_float=False), default=list(DEFAULT_BITS),
                        help=f"bitwidths, {bits_rule(allow_float=False)} (default 2,3,4,6,8,16)")
    parser.add_argument("--microbatch", type=int, default=8,
                        help="inputs per microbatch (default 8)")
    parser.add_argument("--samples", type=int, default=64,
                        help="inputs measured, after --skip (default 64)")
    parser.add_argument("--skip", type=int, default=0,
                        help="inputs left out first, e.g. those a test holds out (default 0)")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per median (9)")
    parser.add_argument("--out", type=writable_out_dir, default=Path("runs/lossless"),
                        help="output folder (default runs/lossless)")
    args = parser.parse_args(argv)
    if min(args.microbatch, args.samples, args.repeats) < 1 or args.skip < 0:
        parser.error("--microbatch, --samples and --repeats must be at least 1, --skip at "
                     "least 0")
    if any(values_label(codec) != codec for codec in args.codecs):
        parser.error("--codecs take labels without a coder; --coder names it")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keep_large_allocations()  # as every rank does, so the coder is timed as it runs
    torch.set_num_threads(1)
    try:
        model = load_model(args.model)
        result = profile(model, args.codecs, args.bits, coder=args.coder,
                         microbatch=args.microbatch, samples=args.samples, skip=args.skip,
                         repeats=args.repeats)
    except ValueError as error:
        print(f"lossless_profile: {error}", file=sys.stderr)
        return 2
    write_profile(result, args.out, "python -m quantpipe_core.lossless_profile", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
