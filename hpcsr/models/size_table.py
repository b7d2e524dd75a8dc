"""Print parameters and forward FLOPs per sample for each factor pair of the paper's grid.

    python -m hpcsr.models.size_table            # author's size (configs/model/default.yaml)
    python -m hpcsr.models.size_table --model tiny    # test size (also: large, configs/model/large.yaml)

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on one sample (batch 1) of the
recipe's patch (1 multiply-add = 2 FLOPs; convolutions, linear layers and attention matmuls;
norms and pointwise ops are not counted). Columns: mean network forward; denoiser context encoding
(once per LR input); one denoiser step; a DDIM-50 and a DDPM-1000 sample per ensemble member
(context encoding shared across members, not included).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from hpcsr.factors import PAPER_PAIRS, recipe
from hpcsr.models.config import ModelConfig
from hpcsr.models.sr_model import build_model


# CPU's fused attention kernel is not in torch's FLOP registry: count it like the GPU ones.
def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def pair_sizes(cfg: ModelConfig, s: int, t: int, patch: int | None = None) -> dict:
    """Parameter counts and forward FLOPs of one sample for factor pair (s, t)."""
    r = recipe(s, t)
    P = patch or r.patch
    model = build_model(cfg, r).eval()
    lr = torch.rand(1, model.frames, P // s, P // s)
    mean = torch.rand(1, t, P, P)
    lr_up, lr_valid = model._prepare(lr, None)
    cond = model.denoiser.encode(lr_up, lr_valid, None, mean, model.target)
    step = torch.zeros(1, dtype=torch.long)
    noisy = torch.randn(1, t, P, P)
    start = mean if cfg.motion_start(t) else None  # any (t, P, P) field: FLOPs only
    mean_flops = count_flops(lambda: model.predict_mean(lr, start=start))
    encode_flops = count_flops(lambda: model.denoiser.encode(lr_up, lr_valid, None, mean, model.target))
    step_flops = count_flops(lambda: model.denoiser(noisy, step, cond))
    return {
        "pair": r.pair.name,
        "L": r.context,
        "patch": P,
        "params_mean": sum(p.numel() for p in model.mean_net.parameters()),
        "params_denoiser": sum(p.numel() for p in model.denoiser.parameters()),
        "gflop_mean": mean_flops / 1e9,
        "gflop_context": encode_flops / 1e9,
        "gflop_step": step_flops / 1e9,
        "gflop_ddim50": 50 * step_flops / 1e9,
        "gflop_ddpm1000": 1000 * step_flops / 1e9,
    }


def format_table(rows: list[dict]) -> str:
    head = f"{'pair':<8}{'L':>3}{'patch':>6}{'params mean':>13}{'params denoiser':>17}{'GF mean':>9}{'GF context':>12}{'GF step':>9}{'GF DDIM-50':>12}{'GF DDPM-1000':>14}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['pair']:<8}{r['L']:>3}{r['patch']:>6}{r['params_mean']:>13,}{r['params_denoiser']:>17,}"
            f"{r['gflop_mean']:>9.2f}{r['gflop_context']:>12.2f}{r['gflop_step']:>9.2f}{r['gflop_ddim50']:>12.1f}{r['gflop_ddpm1000']:>14.1f}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "default", "large"), default="default", help="configs/model size")
    parser.add_argument("--tiny", action="store_true", help="the same as --model tiny")
    parser.add_argument("--patch", type=int, default=None, help="HR patch side for every pair (default: each recipe's)")
    args = parser.parse_args(argv)
    name = "tiny" if args.tiny else args.model
    cfg = ModelConfig.named(name)
    for pair in PAPER_PAIRS:
        if args.patch is not None and args.patch % pair.s:
            parser.error(
                f"--patch {args.patch} is not a multiple of s={pair.s} (pair {pair.name}): pick a multiple of every s"
            )
    print(
        f"model {name}: widths {list(cfg.widths)}, heads {cfg.heads}, windows {list(cfg.windows)}; GF = GFLOP per sample"
    )
    rows = [pair_sizes(cfg, p.s, p.t, args.patch) for p in PAPER_PAIRS]
    print(format_table(rows))


if __name__ == "__main__":
    main()
