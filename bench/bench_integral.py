"""Benchmark of the DUO Diffusion Transformation cache (dlm.diffusion.integral).

Times `compute_cache(50258, -5, -1, points)` for 10^4 and 10^5 grid points against a baseline
measured in the same run: scipy.integrate.quad per point (alpha and dalpha/dgamma, two adaptive
integrals each) on 200 random points of the 10^5 grid, extrapolated per point. The same 200
points give the max absolute error of the cache against quad.

Writes bench/results/integral.json and bench/results/integral.md. Run: python bench/bench_integral.py
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy import integrate
from scipy.optimize import brentq
from scipy.special import log_ndtr

from dlm.diffusion.integral import compute_cache
from dlm.utils import write_json, write_text

VOCAB_SIZE = 50258
GAMMA_MIN, GAMMA_MAX = -5.0, -1.0
GRIDS = (10_000, 100_000)
REPEATS = {10_000: 5, 100_000: 3}
BASELINE_POINTS = 200
RESULTS = Path(__file__).resolve().parent / "results"


def quad_point(gamma: float, k: int) -> tuple[float, float]:
    """alpha, dalpha/dgamma at one gamma by scipy.integrate.quad (epsabs=1e-13, epsrel=1e-12)."""
    mu = math.exp(-gamma / 2)
    log_norm = 0.5 * math.log(2 * math.pi)

    def integrand(z: float) -> float:
        return math.exp(-0.5 * (z - mu) ** 2 - log_norm + (k - 1) * float(log_ndtr(z)))

    z_min = brentq(lambda z: (k - 1) * log_ndtr(z) + 100.0, -60.0, 60.0, xtol=1e-13)
    z_k = brentq(lambda z: math.log(k - 1) + float(log_ndtr(-z)), -60.0, 60.0, xtol=1e-13)
    lo, hi = max(mu - 12.0, z_min), mu + 12.0
    pts = sorted({p for p in (mu, z_k - 0.5, z_k, z_k + 0.5) if lo < p < hi}) or None
    opts = dict(epsabs=1e-13, epsrel=1e-12, limit=500, points=pts)
    p, _ = integrate.quad(integrand, lo, hi, **opts)
    dp, _ = integrate.quad(lambda z: (z - mu) * integrand(z), lo, hi, **opts)
    return (k * p - 1) / (k - 1), k / (k - 1) * dp * (-mu / 2)


def nproc() -> int:
    exe = shutil.which("nproc")
    if exe:
        try:
            return int(subprocess.run([exe], capture_output=True, text=True, check=True).stdout)
        except (subprocess.CalledProcessError, ValueError):
            pass
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main() -> dict:
    started = time.perf_counter()
    compute_cache(VOCAB_SIZE, GAMMA_MIN, GAMMA_MAX, 1000)  # warm-up (imports, allocator)

    timings = {}
    caches = {}
    for points in GRIDS:
        runs = []
        for _ in range(REPEATS[points]):
            t0 = time.perf_counter()
            caches[points] = compute_cache(VOCAB_SIZE, GAMMA_MIN, GAMMA_MAX, points)
            runs.append(time.perf_counter() - t0)
        best = min(runs)
        timings[points] = {
            "points": points,
            "repeats": len(runs),
            "seconds_best": best,
            "seconds_median": float(np.median(runs)),
            "points_per_second": points / best,
        }

    # baseline: quad per point on a random subset of the 10^5 grid, in the same run
    big = caches[GRIDS[-1]]
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(big["gamma"].size, BASELINE_POINTS, replace=False))
    t0 = time.perf_counter()
    ref = np.array([quad_point(float(big["gamma"][i]), VOCAB_SIZE) for i in subset])
    quad_seconds = time.perf_counter() - t0
    quad_per_point = quad_seconds / BASELINE_POINTS
    err_alpha = float(np.abs(big["alpha"][subset] - ref[:, 0]).max())
    err_dalpha = float(np.abs(big["dalpha_dgamma"][subset] - ref[:, 1]).max())

    for t in timings.values():
        t["quad_seconds_extrapolated"] = quad_per_point * t["points"]
        t["speedup_vs_quad"] = t["quad_seconds_extrapolated"] / t["seconds_best"]

    result = {
        "benchmark": "dlm.diffusion.integral.compute_cache",
        "vocab_size": VOCAB_SIZE,
        "gamma_min": GAMMA_MIN,
        "gamma_max": GAMMA_MAX,
        "grids": [timings[p] for p in GRIDS],
        "baseline": {
            "method": "scipy.integrate.quad per point (alpha and dalpha/dgamma; epsabs=1e-13, epsrel=1e-12)",
            "points": BASELINE_POINTS,
            "seconds": quad_seconds,
            "seconds_per_point": quad_per_point,
            "points_per_second": 1.0 / quad_per_point,
        },
        "accuracy_vs_quad": {
            "points": BASELINE_POINTS,
            "grid_points": GRIDS[-1],
            "max_abs_err_alpha": err_alpha,
            "max_abs_err_dalpha_dgamma": err_dalpha,
        },
        "machine": {
            "nproc": nproc(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "total_bench_seconds": time.perf_counter() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "integral.json", result)
    write_text(RESULTS / "integral.md", render_markdown(result))
    return result


def render_markdown(r: dict) -> str:
    m = r["machine"]
    b = r["baseline"]
    acc = r["accuracy_vs_quad"]
    lines = [
        "## DUO Diffusion Transformation cache (`dlm.diffusion.integral`)",
        "",
        f"`compute_cache({r['vocab_size']}, {r['gamma_min']:g}, {r['gamma_max']:g}, points)`; "
        f"baseline `scipy.integrate.quad` per point measured in the same run on {b['points']} points "
        f"({b['seconds_per_point'] * 1e3:.2f} ms/point), extrapolated to the grid size.",
        "",
        "| grid points | seconds (best) | points/s | quad seconds (extrapolated) | speed-up vs quad |",
        "|---:|---:|---:|---:|---:|",
    ]
    for t in r["grids"]:
        lines.append(
            f"| {t['points']:,} | {t['seconds_best']:.3f} | {t['points_per_second']:,.0f} "
            f"| {t['quad_seconds_extrapolated']:.1f} | {t['speedup_vs_quad']:,.0f}x |"
        )
    lines += [
        "",
        f"Max abs error vs quad on {acc['points']} random points of the {acc['grid_points']:,}-point grid: "
        f"alpha {acc['max_abs_err_alpha']:.1e}, dalpha/dgamma {acc['max_abs_err_dalpha_dgamma']:.1e}.",
        "",
        f"Machine: nproc={m['nproc']}, {m['platform']}, Python {m['python']}, numpy {m['numpy']}, "
        f"scipy {m['scipy']}; date {r['date']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    res = main()
    print(render_markdown(res))
