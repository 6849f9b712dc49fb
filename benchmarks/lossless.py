"""The lossless stage (`lossless="zstd"`) on real activations: bytes saved and its speed.

For each tensor (MiniLM and the digits ViT at a few cuts, first microbatches of their data; the
ViT-Base-shaped block output and post-GeLU tensors of benchmarks/codec.py), codec scheme and
bitwidth: the coded payload's bytes over the bit-planes' (`coded`), the order-0 entropy bound
of the indices over the bit-planes (`bound`: no coder of single indices does better), the same
ratio for coders not chosen (zstd on bit-planes, zstd level 3, LZ4 where installed), and the
coder's speed in MB per second of bit-plane payload (the issue's unit), encode and decode,
medians of rounds timed in turns. The coder's time includes laying the indices out as symbols.

    python benchmarks/lossless.py [--repeats 15] [--bits 2,3,4,8] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
from pathlib import Path

import numpy as np
import torch
import zstandard
from codec import block_output, post_gelu

from quantpipe_core.cli import bits_list
from quantpipe_core.heap import keep_large_allocations
from quantpipe_core.models import load_model
from quantpipe_core.quant import Codec, grid, lossless, symbols
from quantpipe_core.quant.clipping import clip_method, group_ranges
from quantpipe_core.quant.wire import _grid_stats, _layout, _outlier_channels
from quantpipe_core.tasks import task_for
from quantpipe_core.timing import medians_in_turns

SCHEMES = ("ds-aciq/hadamard/auto", "minmax/none/tensor")
CUTS = {"minilm": ("block2.out", "block2.gelu", "block4.out"), "digits-vit": ("embed",
                                                                              "block1.gelu")}


def real_tensors() -> dict[str, torch.Tensor]:
    """The hidden state crossing each cut for the first microbatch of 8 of each model's data."""
    tensors = {}
    for name, cuts in CUTS.items():
        model = load_model(name)
        microbatch = task_for(model, 8, 8).microbatches[0]
        with torch.no_grad():
            for cut in cuts:
                carry = model.run(microbatch, 0, model.cut_index(cut) + 1)
                tensors[f"{name} {cut}"] = max(carry.values(), key=torch.Tensor.numel)
    return tensors


def indices(x: torch.Tensor, bits: int, label: str) -> torch.Tensor:
    """The grid indices `encode` would send for `x` (its main payload, outliers apart)."""
    codec = Codec.parse(label)
    layout = _layout(tuple(x.shape), bits, codec, torch.float32)
    x32 = x.detach().float().reshape(layout.rows, layout.channels)
    apart = _outlier_channels(x32, layout.outliers) if layout.outliers else None
    layout, stats = _grid_stats(x32, layout, apart)
    lo, hi = group_ranges(stats, bits, clip_method(codec.method))
    return grid.quantize(stats.x2d, lo, hi, bits)


def entropy_bytes(q: torch.Tensor) -> float:
    counts = np.bincount(q.reshape(-1).numpy().astype(np.int64))
    p = counts[counts > 0] / q.numel()
    return float(-(p * np.log2(p)).sum() * q.numel() / 8)


def alternatives(q: torch.Tensor, bits: int, payload: bytes) -> dict[str, float | None]:
    """Bytes of coders not chosen, over the bit-planes': zstd level 1 on the bit-planes (not on
    symbols), zstd level 3 on symbols, and LZ4 on symbols where the `lz4` package is installed
    (it is not a dependency)."""
    raw = symbols.to_bytes(q, bits)
    out: dict[str, float | None] = {
        "planes+zstd": len(zstandard.ZstdCompressor(level=1).compress(payload)) / len(payload),
        "zstd-3": len(zstandard.ZstdCompressor(level=3).compress(raw)) / len(payload),
        "lz4": None,
    }
    if importlib.util.find_spec("lz4") is not None:
        import lz4.frame
        out["lz4"] = len(lz4.frame.compress(raw)) / len(payload)
    return out


def measure(name: str, x: torch.Tensor, bits: int, label: str, repeats: int) -> dict:
    q = indices(x, bits, label)
    planes, zstd = lossless.coder("none"), lossless.coder("zstd")
    payload, coded = planes.encode(q, bits), zstd.encode(q, bits)
    seconds = medians_in_turns({
        "planes enc": lambda: planes.encode(q, bits),
        "zstd enc": lambda: zstd.encode(q, bits),
        "planes dec": lambda: planes.decode(memoryview(payload), q.numel(), bits),
        "zstd dec": lambda: zstd.decode(memoryview(coded), q.numel(), bits),
    }, repeats)
    megabytes = len(payload) / 1e6
    return {"tensor": name, "codec": label, "bits": bits, "planes_bytes": len(payload),
            "coded": len(coded) / len(payload), "bound": entropy_bytes(q) / len(payload),
            **alternatives(q, bits, payload),
            **{f"{key.replace(' ', '_')}_MBps": megabytes / s for key, s in seconds.items()}}


def ratio_or_na(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds (median)")
    parser.add_argument("--bits", type=bits_list(allow_float=False), default="2,3,4,8",
                        help="comma-separated bitwidths (default 2,3,4,8)")
    parser.add_argument("--json", help="also write every row to this JSON file")
    args = parser.parse_args()
    keep_large_allocations()
    torch.set_num_threads(2)
    tensors = {**real_tensors(), "vit-base block-output": block_output(),
               "vit-base post-gelu": post_gelu()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of "
          f"{args.repeats} rounds in turns; speeds in MB/s of bit-plane payload")
    print(f"{'tensor':<24} {'codec':<22} {'bits':>4} {'planes B':>9} {'coded':>6} {'bound':>6} "
          f"{'zstd enc':>8} {'zstd dec':>8} {'planes enc':>10} {'planes dec':>10} "
          f"{'planes+zstd':>11} {'zstd-3':>6} {'lz4':>6}")
    rows = []
    for name, x in tensors.items():
        for label in SCHEMES:
            for bits in args.bits:
                row = measure(name, x, bits, label, args.repeats)
                rows.append(row)
                print(f"{name:<24} {label:<22} {bits:>4} {row['planes_bytes']:>9} "
                      f"{row['coded']:>6.3f} {row['bound']:>6.3f} {row['zstd_enc_MBps']:>8.0f} "
                      f"{row['zstd_dec_MBps']:>8.0f} {row['planes_enc_MBps']:>10.0f} "
                      f"{row['planes_dec_MBps']:>10.0f} {row['planes+zstd']:>11.3f} "
                      f"{row['zstd-3']:>6.3f} {ratio_or_na(row['lz4']):>6}")
    print("\nmedians over tensors (default scheme):")
    for bits in args.bits:
        mine = [r for r in rows if r["bits"] == bits and r["codec"] == SCHEMES[0]]
        print(f"  {bits} bits: coded {statistics.median(r['coded'] for r in mine):.3f} of "
              f"bit-planes (bound {statistics.median(r['bound'] for r in mine):.3f}), zstd "
              f"{statistics.median(r['zstd_enc_MBps'] for r in mine):.0f} / "
              f"{statistics.median(r['zstd_dec_MBps'] for r in mine):.0f} MB/s; zstd on "
              f"bit-planes {statistics.median(r['planes+zstd'] for r in mine):.3f}, zstd-3 "
              f"{statistics.median(r['zstd-3'] for r in mine):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
