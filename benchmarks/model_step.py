"""Training-step time of the SRModel: forward + backward + AdamW of the joint loss (mean MSE +
v-prediction MSE, as the author trains) at pair (10, 3), L = 5, patch 100, batch 2, in fp32 and
under bf16 autocast, for the tiny and the author's (default) size.

Baseline in the same run: the default size without windowed spatial attention (windows
[1,1,1,1,1]), which isolates the cost of the author's 3 x 3 windows. Figures are seconds per step
(lower is better), medians over the repeats after one warm-up step.

Also the context length L at the skill experiment's (4, 1) (tiny size, patch 32, batch 8, fp32): L = 3
against the recipe's L = 10 as the baseline, the same model otherwise (docs/SKILL_LOG.md s60: L = 3
scores the same on unseen radar at 10-minute steps).

    python benchmarks/model_step.py [--threads 1] [--repeats 3] [--quick] [--out benchmarks/results/model_step.json]

--quick: tiny size (and its no-window baseline) only, patch 40 (a minute on CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import figure, write_result  # noqa: E402

from hpcsr.factors import Recipe, recipe  # noqa: E402
from hpcsr.models import ModelConfig, build_model  # noqa: E402

SHORT_CONTEXT = 3  # the context length compared with the recipe's at (4, 1)


def without_windows(cfg: ModelConfig) -> ModelConfig:
    return dataclasses.replace(cfg, windows=(1,) * cfg.levels)


def step_times(
    cfg: ModelConfig, precision: str, repeats: int, batch: int, patch: int, label: str, r: Recipe | None = None
) -> list[float]:
    """Seconds of each timed joint-loss step at recipe `r` (default: (10, 3)'s)."""
    torch.manual_seed(0)
    r = r or recipe(10, 3)
    s, t = r.pair.s, r.pair.t
    model = build_model(cfg, r)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr = torch.randn(batch, r.context, patch // s, patch // s)
    hr = torch.randn(batch, t, patch, patch)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        with autocast:
            mean = model.predict_mean(lr)
            loss = model.mean_loss(lr, hr) + model.diffusion_loss(lr, hr, mean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        elapsed = time.perf_counter() - start
        if i:  # the first step is warm-up (allocator, oneDNN primitive creation)
            times.append(elapsed)
        print(f"  {label} {precision} step {i}{' (warm-up)' if i == 0 else ''}: {elapsed:.3f} s", flush=True)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--quick", action="store_true", help="tiny size only, patch 40")
    parser.add_argument("--out", default=str(HERE / "results" / "model_step.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, patch = 2, 40 if args.quick else 100
    sizes = {"tiny": ModelConfig.tiny()} if args.quick else {"tiny": ModelConfig.tiny(), "default": ModelConfig()}
    figures, rows = [], []
    for name, cfg in sizes.items():
        params = sum(p.numel() for p in build_model(cfg, recipe(10, 3)).parameters())
        for precision in ("fp32", "bf16"):
            times = step_times(cfg, precision, args.repeats, batch, patch, name)
            base = step_times(without_windows(cfg), precision, args.repeats, batch, patch, f"{name}-no-window")
            fig = figure(
                f"{name} {precision} step (joint loss fwd+bwd+AdamW)",
                "s/step",
                times,
                f"{name} without window attention",
                base,
                higher_is_better=False,
                params=params,
                precision=precision,
                size=name,
            )
            figures.append(fig)
            rows.append((name, precision, params, fig["value"], fig["baseline"]["value"]))
    base_r = recipe(4, 1)
    short = dataclasses.replace(base_r, context=SHORT_CONTEXT)
    short_times = step_times(ModelConfig.tiny(), "fp32", args.repeats, 8, 32, f"tiny (4,1) L={SHORT_CONTEXT}", short)
    recipe_times = step_times(ModelConfig.tiny(), "fp32", args.repeats, 8, 32, f"tiny (4,1) L={base_r.context}", base_r)
    context_fig = figure(
        f"tiny fp32 step at (4,1), L = {SHORT_CONTEXT} (patch 32, batch 8)",
        "s/step",
        short_times,
        f"the recipe's L = {base_r.context}",
        recipe_times,
        higher_is_better=False,
        pair="s4_t1",
        context=SHORT_CONTEXT,
    )
    figures.append(context_fig)
    print(
        f"\npair (10,3), L=5, patch {patch}, batch {batch}, {args.threads} thread(s), CPU {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"{'size':<9}{'precision':>10}{'params':>12}{'s/step':>9}{'no-window s/step':>18}")
    for name, precision, params, value, base in rows:
        print(f"{name:<9}{precision:>10}{params:>12,}{value:>9.3f}{base:>18.3f}")
    print(
        f"(4,1), tiny, fp32, patch 32, batch 8: L={SHORT_CONTEXT} {context_fig['value']:.3f} s/step, "
        f"L={base_r.context} {context_fig['baseline']['value']:.3f} s/step ({context_fig['ratio']:.2f}x)"
    )
    meta = {
        "threads": args.threads,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "batch": batch,
        "patch": patch,
        "pair": "s10_t3",
        "context": 5,
    }
    print(f"wrote {write_result(args.out, 'model_step', figures, args.quick, meta)}")


if __name__ == "__main__":
    main()
