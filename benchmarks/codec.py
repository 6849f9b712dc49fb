"""Codec speed and error on a ViT-Base-sized microbatch (8 x 197 x 768 float32).

For every bitwidth and clipping method: encode and decode speed (input float32 MB per second,
median of --repeats runs), wire bytes, mean squared error, and encode time relative to minmax at
the same bitwidth. Two tensors: a block output (Laplace body with a few outlier channels, as in
ViT/BERT hidden states) and a post-GeLU tensor. Ends with the speed goals of the codec issue.

    python benchmarks/codec.py [--repeats 15] [--bits 2,3,4,6,8,16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from quantpipe_core.cli import bits_list, method_list
from quantpipe_core.quant import METHODS, decode, encode
from quantpipe_core.timing import median_s

SHAPE = (8, 197, 768)


def block_output(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.distributions.Laplace(0.0, 0.5).sample(SHAPE)
    outliers = torch.randperm(SHAPE[-1], generator=gen)[:4]
    x[..., outliers] *= 20.0
    return x


def post_gelu(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.gelu(2.0 * torch.randn(SHAPE, generator=gen))


def measure(x: torch.Tensor, bits: int, method: str, repeats: int, granularity: str) -> dict:
    megabytes = x.numel() * 4 / 1e6
    packet = encode(x, bits, method, granularity=granularity)
    enc = median_s(lambda: encode(x, bits, method, granularity=granularity), repeats)
    dec = median_s(lambda: decode(packet), repeats)
    mse = torch.mean((decode(packet) - x) ** 2).item()
    return {
        "bits": bits,
        "method": method,
        "encode_ms": enc * 1e3,
        "encode_MBps": megabytes / enc,
        "decode_MBps": megabytes / dec,
        "wire_bytes": len(packet),
        "mse": mse,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per cell (median)")
    parser.add_argument(
        "--bits", type=bits_list(allow_float=False), default="2,3,4,6,8,16",
        help="comma-separated bitwidths"
    )
    parser.add_argument(
        "--methods", type=method_list, default=",".join(METHODS), help="comma-separated methods"
    )
    parser.add_argument("--granularity", default="tensor", choices=("tensor", "token"))
    parser.add_argument("--json", help="also write every row to this JSON file")
    args = parser.parse_args()
    widths, methods = args.bits, args.methods
    torch.set_num_threads(2)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {SHAPE}, "
        f"granularity {args.granularity}, median of {args.repeats}"
    )
    rows = []
    for name, x in (("block-output", block_output()), ("post-gelu", post_gelu())):
        print(
            f"\n{name}\n{'bits':>4} {'method':<10} {'enc MB/s':>9} {'dec MB/s':>9} "
            f"{'x minmax':>8} {'wire B':>9} {'mse':>10}"
        )
        for bits in widths:
            base = None
            for method in methods:
                row = measure(x, bits, method, args.repeats, args.granularity) | {"data": name}
                base = base or (row["encode_ms"] if method == "minmax" else None)
                ratio = row["encode_ms"] / base if base else float("nan")
                print(
                    f"{bits:>4} {method:<10} {row['encode_MBps']:>9.0f} {row['decode_MBps']:>9.0f} "
                    f"{ratio:>8.2f} {row['wire_bytes']:>9} {row['mse']:>10.3g}"
                )
                rows.append(row | {"x_minmax": ratio})
    print("\ngoals (block-output tensor):")
    cell = {(r["bits"], r["method"]): r for r in rows if r["data"] == "block-output"}
    goals = [
        ("minmax encode 8 bits >= 1500 MB/s", (8, "minmax"), "encode_MBps", 1500),
        ("minmax decode 8 bits >= 2000 MB/s", (8, "minmax"), "decode_MBps", 2000),
        ("minmax encode 2 bits >= 1000 MB/s", (2, "minmax"), "encode_MBps", 1000),
        ("minmax encode 4 bits >= 1000 MB/s", (4, "minmax"), "encode_MBps", 1000),
    ]
    for text, key, field, floor in goals:
        if key in cell:
            value = cell[key][field]
            print(f"  {text}: {value:.0f} {'ok' if value >= floor else 'MISSED'}")
    for bits in widths:
        if (bits, "ds-aciq") in cell and (bits, "minmax") in cell:
            ratio = cell[(bits, "ds-aciq")]["x_minmax"]
            print(
                f"  ds-aciq encode within 3x minmax at {bits} bits: {ratio:.2f}x "
                f"{'ok' if ratio <= 3 else 'MISSED'}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
