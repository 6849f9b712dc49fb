"""Measure compute profiles: seconds per microbatch of every unit and of the codec at each cut.

    python -m quantpipe_core.profile --model vit-base --threads 1,2 --microbatch 1,8

Times are medians over ``--repeats`` runs after one warm-up, with torch limited to each thread
count in turn (stages that share a machine in emulation run one thread each). The codec is
timed once per kind of cut (``embed``, ``attn``, ``gelu``, ``out``) on the real activation at that
cut of the middle block, for every codec scheme (label) and bitwidth. Writes ``OUT/MODEL.json``
(schema in `quantpipe_core.profiles.compute`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from quantpipe_core.cli import ArgumentParser, bits_list, codec_list, int_list, writable_out_dir
from quantpipe_core.datasets import digits, stdlib_sentences
from quantpipe_core.heap import keep_large_allocations
from quantpipe_core.models import Carry, SentenceTokenizer, StagedModel, load_model, model_dir
from quantpipe_core.models.carry import decode_carry, encode_carry
from quantpipe_core.names import bits_rule
from quantpipe_core.profiles.compute import SCHEMA
from quantpipe_core.profiles.files import read_profile, write_profile
from quantpipe_core.quant import METHODS
from quantpipe_core.timing import median_s

DEFAULT_BITS = (2, 3, 4, 6, 8, 16, 32)
# every clipping method as version 1 sent it, and with the default options
DEFAULT_CODECS = tuple(f"{method}/{options}" for options in ("none/tensor", "hadamard/auto")
                       for method in METHODS)


def sample_input(model: StagedModel, microbatch: int, tokens: int) -> Carry:
    """A real microbatch for the model: digits images, sentences cut or padded to `tokens`,
    or random pixels for image models without a data set here (e.g. vit-base)."""
    if model.kind == "embedding":
        carry = SentenceTokenizer(model_dir(model.name))(stdlib_sentences(microbatch))
        ids = torch.zeros(microbatch, tokens, dtype=torch.long)
        mask = torch.zeros(microbatch, tokens)
        width = min(tokens, carry["input_ids"].shape[1])
        ids[:, :width] = carry["input_ids"][:, :width]
        mask[:, :width] = carry["mask"][:, :width]
        return {"input_ids": ids, "mask": mask}
    if (model.embed.channels, model.embed.image_size) == (1, 8):
        return {"pixels": digits("test").images[:microbatch]}
    size = model.embed.image_size
    generator = torch.Generator().manual_seed(0)
    shape = (microbatch, model.embed.channels, size, size)
    return {"pixels": torch.randn(shape, generator=generator)}


def unit_times(model: StagedModel, inputs: Carry, repeats: int) -> dict[str, float]:
    """Median seconds of each unit on the carry the units before it produce."""
    times = {}
    carry = inputs
    with torch.no_grad():
        for index, name in enumerate(model.unit_names):
            arrived = carry
            times[name] = median_s(lambda a=arrived, i=index: model.run(a, i, i + 1), repeats)
            carry = model.run(arrived, index, index + 1)
    return times


def codec_cuts(model: StagedModel) -> dict[str, str]:
    """The cut each kind is timed at: ``embed`` and the middle block's three cuts."""
    middle = len(model.blocks) // 2
    return {"embed": "embed", **{k: f"block{middle}.{k}" for k in ("attn", "gelu", "out")}}


def codec_times(
    model: StagedModel,
    inputs: Carry,
    methods: Sequence[str],
    bits: Sequence[int],
    repeats: int,
) -> dict[str, Any]:
    """Median encode and decode seconds of the carry at each kind of cut."""
    table: dict[str, Any] = {}
    with torch.no_grad():
        for kind, cut in codec_cuts(model).items():
            carry = model.run(inputs, 0, model.cut_index(cut) + 1)
            for method in methods:
                for b in bits:
                    frame = encode_carry(carry, b, method)
                    table.setdefault(kind, {}).setdefault(method, {})[str(b)] = {
                        "encode_s": median_s(
                            lambda c=carry, b=b, m=method: encode_carry(c, b, m), repeats
                        ),
                        "decode_s": median_s(lambda f=frame: decode_carry(f), repeats),
                    }
    return table


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version()}


def profile(
    model: StagedModel,
    threads: Sequence[int],
    microbatches: Sequence[int],
    methods: Sequence[str],
    bits: Sequence[int],
    *,
    tokens: int,
    repeats: int,
    units_from: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The compute profile dictionary (see `quantpipe_core.profiles.compute`). With
    `units_from` (an earlier profile of the model) its unit times are kept and only the codec
    is timed."""
    units: dict[str, Any] = {}
    codec: dict[str, Any] = {}
    settings = [(t, m) for t in threads for m in microbatches]
    for t, m in tqdm(settings, desc=model.name, unit="setting", disable=not progress):
        torch.set_num_threads(t)
        inputs = sample_input(model, m, tokens)
        units.setdefault(str(t), {})[str(m)] = (
            unit_times(model, inputs, repeats) if units_from is None
            else units_from["units"][str(t)][str(m)]
        )
        codec.setdefault(str(t), {})[str(m)] = codec_times(
            model, inputs, methods, bits, repeats
        )
    return {
        "schema": SCHEMA,
        "model": model.name,
        "tokens": model.tokens or tokens,
        "machine": machine(),
        "units": units,
        "codec": codec,
        "codec_measured_at": codec_cuts(model),
        "repeats": repeats,
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def earlier_units(
    path: Path, model: StagedModel, threads: Sequence[int], microbatches: Sequence[int]
) -> dict[str, Any]:
    """An earlier profile whose unit times can stand for these settings, or a ValueError."""
    earlier = read_profile(path, SCHEMA, "compute")
    if earlier["model"] != model.name:
        raise ValueError(f"{path} profiles {earlier['model']!r}, not {model.name!r}")
    missing = [f"{t} threads, microbatch {m}" for t in threads for m in microbatches
               if str(m) not in earlier["units"].get(str(t), {})]
    if missing:
        raise ValueError(f"{path} has no unit times for {'; '.join(missing)}")
    return earlier


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m quantpipe_core.profile",
        description="Measure each unit's compute time per microbatch and the codec's encode and "
        "decode time at each kind of cut, on this machine. Writes OUT/MODEL.json.",
    )
    parser.add_argument("--model", default="vit-base",
                        help="digits-vit, minilm, vit-base or a Hugging Face folder (vit-base)")
    parser.add_argument("--threads", type=int_list, default=[1, 2],
                        help="torch thread counts to measure with (default 1,2)")
    parser.add_argument("--microbatch", type=int_list, default=[1, 8],
                        help="microbatch sizes (default 1,8)")
    parser.add_argument("--bits", type=bits_list(allow_float=True), default=list(DEFAULT_BITS),
                        help=f"bitwidths for the codec, {bits_rule(allow_float=True)} "
                        "(default 2,3,4,6,8,16,32)")
    parser.add_argument("--codecs", type=codec_list, default=list(DEFAULT_CODECS),
                        help="codec labels, method[/transform[/granularity[/oK]]] (default: "
                        "every clipping method with none/tensor and with hadamard/auto)")
    parser.add_argument("--tokens", type=int, default=32,
                        help="sequence length for text models (default 32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per median (5)")
    parser.add_argument("--out", type=writable_out_dir, default=Path("runs/compute"),
                        help="output folder (default runs/compute)")
    parser.add_argument("--units-from", type=Path, metavar="PROFILE.json",
                        help="keep this earlier profile's unit times (same model, threads and "
                        "microbatches) and time only the codec")
    args = parser.parse_args(argv)
    if min(args.threads, default=0) < 1 or min(args.microbatch, default=0) < 1:
        parser.error("--threads and --microbatch need positive integers")
    if args.repeats < 1 or args.tokens < 1:
        parser.error("--repeats and --tokens must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keep_large_allocations()  # as every rank does, so the codec is timed as it runs
    try:
        model = load_model(args.model)
        units_from = None if args.units_from is None else earlier_units(
            args.units_from, model, args.threads, args.microbatch)
    except ValueError as error:
        print(f"profile: {error}", file=sys.stderr)
        return 2
    result = profile(
        model, args.threads, args.microbatch, args.codecs, args.bits,
        tokens=args.tokens, repeats=args.repeats, units_from=units_from,
    )
    if units_from is not None:
        result["units_measured"] = units_from.get("created")
    write_profile(result, args.out, "python -m quantpipe_core.profile", argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
