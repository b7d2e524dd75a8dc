"""bf16 throughput and model FLOP utilisation (MFU) of the SRModel on one device.

Per model size (--model, comma-separated: tiny, default, large), three figures, each with fp32
measured in the same run as its baseline:
  - training, mean stage: samples/s of one optimiser step of the mean network (MSE, forward +
    backward + AdamW) under bf16 autocast;
  - training, diffusion stage: the same for the denoiser's v-prediction loss on the frozen mean
    network's output (mean forward without gradients, as train.stage=diffusion does);
  - sampling: denoiser evaluations/s (one DDIM step of one ensemble member = one evaluation).
MFU = FLOPs of the work (counted by hpcsr.models.size_table's counter, torch's FlopCounterMode,
forward and backward) / measured time / the device's peak dense bf16 FLOP/s (table below, or
HPCSR_PEAK_TFLOPS). On CPU (--device cpu, the dry mode of scripts/gpu_check.sh) there is no
peak in the table and MFU is not reported.

    python benchmarks/gpu_throughput.py [--device auto] [--model default,large] [--pair 10,3] [--batch 16] [--quick] [--out ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import figure, format_value, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# dense bf16 tensor-core peak in TFLOP/s by device name (vendor data sheets; first match wins)
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),  # also GH200
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
)


def peak_for_name(name: str, environ=os.environ) -> float | None:
    """Peak dense bf16 TFLOP/s of a CUDA device name; HPCSR_PEAK_TFLOPS wins; None when unknown."""
    if environ.get("HPCSR_PEAK_TFLOPS"):
        return float(environ["HPCSR_PEAK_TFLOPS"])
    return next((value for key, value in PEAK_BF16_TFLOPS if key in name), None)


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """(peak dense bf16 TFLOP/s, device name); None for a CPU or an unknown GPU (set HPCSR_PEAK_TFLOPS)."""
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    return peak_for_name(name), name


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Workload:
    """The model, optimiser and a fixed random batch of one factor pair on one device."""

    def __init__(self, model_name: str, pair: tuple[int, int], batch: int, patch: int | None, device: torch.device):
        from hpcsr.factors import recipe
        from hpcsr.models import ModelConfig, build_model

        torch.manual_seed(0)
        self.recipe = recipe(*pair)
        self.patch = patch or self.recipe.patch
        self.device, self.batch = device, batch
        self.model = build_model(ModelConfig.named(model_name), self.recipe).to(device)
        self.params = sum(p.numel() for p in self.model.parameters())
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, **fused)
        s, t, P = self.recipe.pair.s, self.recipe.pair.t, self.patch
        self.lr = torch.randn(batch, self.recipe.context, P // s, P // s, device=device)
        self.hr = torch.randn(batch, t, P, P, device=device)
        with torch.no_grad():
            self.mean = self.model.predict_mean(self.lr)
            lr_up, lr_valid = self.model._prepare(self.lr, None)
            self.cond = self.model.denoiser.encode(lr_up, lr_valid, None, self.mean, self.model.target)
        self.noisy = torch.randn_like(self.hr)
        self.steps = torch.full((batch,), 500, dtype=torch.long, device=device)

    def autocast(self, precision: str):
        if precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, precision: str, stage: str) -> None:
        """One optimiser step of the mean stage or of the diffusion stage (mean network frozen)."""
        with self.autocast(precision):
            if stage == "mean":
                loss = self.model.mean_loss(self.lr, self.hr)
            else:
                with torch.no_grad():
                    mean = self.model.predict_mean(self.lr)
                loss = self.model.diffusion_loss(self.lr, self.hr, mean)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @torch.no_grad()
    def denoise_step(self, precision: str) -> None:
        with self.autocast(precision):
            self.model.denoiser(self.noisy, self.steps, self.cond)

    def flops(self, fn) -> int:
        from hpcsr.models.size_table import count_flops

        return count_flops(fn)


def rates(
    fn, precision: str, device: torch.device, repeats: int, iters: int, warmup: int, per_call: int
) -> list[float]:
    """Items/s of `fn(precision)` (per_call items per call): `repeats` timings of `iters` calls each."""
    for _ in range(warmup):
        fn(precision)
    sync(device)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn(precision)
        sync(device)
        out.append(iters * per_call / (time.perf_counter() - start))
    return out


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(
            f"gpu_throughput: --device {name} but no CUDA GPU is visible (torch {torch.__version__}); "
            "use --device cpu for a dry run"
        )
    return torch.device(name)


def measure_model(model_name: str, a, device, peak, device_name) -> tuple[list, dict]:
    """The three figures of one model size, and its meta record."""
    gpu = device.type == "cuda"
    batch = a.batch or (16 if gpu else 2)
    repeats = a.repeats or (3 if a.quick else 5)
    iters = (5 if a.quick else 20) if gpu else 1
    warmup = 3 if gpu else 1
    pair = tuple(int(v) for v in a.pair.split(","))
    work = Workload(model_name, pair, batch, a.patch or (None if gpu else 40), device)
    print(
        f"[gpu_throughput] {device_name}: model {model_name} ({work.params:,} parameters), pair s{pair[0]}_t{pair[1]}, "
        f"L={work.recipe.context}, patch {work.patch}, batch {batch}; peak bf16 "
        f"{f'{peak:g} TFLOP/s' if peak else 'unknown (MFU not reported)'}",
        flush=True,
    )
    figures = []
    for label, fn, unit in (
        ("training (mean stage)", lambda prec: work.train_step(prec, "mean"), "samples/s"),
        ("training (diffusion stage)", lambda prec: work.train_step(prec, "diffusion"), "samples/s"),
        ("sampling", work.denoise_step, "denoiser evals/s"),
    ):
        per_item = work.flops(lambda: fn("bf16")) / batch  # forward + backward for training
        runs = {prec: rates(fn, prec, device, repeats, iters, warmup, batch) for prec in ("bf16", "fp32")}
        fig = figure(
            f"{label} {unit} bf16 ({model_name}, s{pair[0]}_t{pair[1]}, P={work.patch}, batch {batch})",
            unit,
            runs["bf16"],
            f"fp32 ({label}, same run)",
            runs["fp32"],
            gflop_per_item=per_item / 1e9,
        )
        achieved = fig["value"] * per_item / 1e12
        fig["achieved_tflops"] = achieved
        fig["mfu"] = achieved / peak if peak else None
        if gpu:
            fig["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        figures.append(fig)
        mfu = f"{fig['mfu']:.1%}" if fig["mfu"] is not None else "n/a"
        print(
            f"[gpu_throughput] {model_name} {label}: bf16 {format_value(fig['value'])} {unit}, fp32 "
            f"{format_value(fig['baseline']['value'])} ({fig['ratio']:.2f}x), {per_item / 1e9:.2f} GFLOP per item, "
            f"{achieved:.3g} TFLOP/s, MFU {mfu}",
            flush=True,
        )
    meta = {"params": work.params, "patch": work.patch, "batch": batch, "iters_per_repeat": iters}
    meta.update(pair=f"s{pair[0]}_t{pair[1]}", context=work.recipe.context)
    return figures, meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (cuda when visible), cuda, cuda:N or cpu")
    p.add_argument(
        "--model", help="model sizes, comma-separated: tiny, default, large (default: default on GPU, tiny on CPU)"
    )
    p.add_argument("--pair", default="10,3", help="factor pair s,t (default %(default)s)")
    p.add_argument("--batch", type=int, help="patches per step (default 16 on GPU, 2 on CPU)")
    p.add_argument("--patch", type=int, help="HR patch side (default: the recipe's; 40 on CPU)")
    p.add_argument("--repeats", type=int, help="timed repeats (default 5, quick 3)")
    p.add_argument("--quick", action="store_true", help="fewer iterations and repeats")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_throughput.json")
    a = p.parse_args(argv)
    device = pick_device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    names = (a.model or ("default" if device.type == "cuda" else "tiny")).split(",")
    peak, device_name = peak_tflops(device)
    figures, models = [], {}
    for name in names:
        figs, models[name] = measure_model(name, a, device, peak, device_name)
        figures += figs
    meta = {
        "device": device_name,
        "peak_bf16_tflops": peak,
        "models": models,
        "flop_counter": "torch.utils.flop_counter via hpcsr.models.size_table.count_flops",
    }
    print(f"wrote {write_result(a.out, 'gpu_throughput', figures, a.quick, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
