"""
Numerics and cost of the pooling rules (the figures of docs/theory.md, "Log-linear pooling").

1. Normal: largest componentwise relative error of the pooled mean and of the scale against
   exact rational arithmetic, on random draws (scales 1e-6..1e6, scale ratios to 1e6, means of
   independent magnitudes 1e-6..1e6, a fifth of them 0, lam including 0, 1, tiny, 1 - tiny),
   in float32 and float64.
2. MultivariateNormal in float32: non-finite values and exceptions on ill-conditioned pairs
   (condition numbers up to 1e14, scales 1e-6..1e6).
3. With --baseline-file: forward + backward time of normal_pool_params against the one in that
   file (a single-module pooling.py of an earlier commit), interleaved, one thread.

    python benchmarks/bench_pooling.py [--root DIR] [--baseline-file FILE] [--draws 20000]

--root imports pyro_probmix from DIR (e.g. an archive of an earlier commit:
``git archive f3f15f6 pyro_probmix | tar -x -C /tmp/old``).
"""
import argparse
import importlib.util
import random
import statistics
import sys
import time
import warnings
from fractions import Fraction


def normal_errors(normal_pool_params, torch, draws):
    rng = random.Random(0)
    for dtype in (torch.float32, torch.float64):
        tolerance = 1e-5 if dtype == torch.float32 else 1e-12
        worst_loc = worst_scale = 0.0
        over = 0
        for _ in range(draws):
            scale_p = 10 ** rng.uniform(-6, 6)
            scale_q = min(max(scale_p * 10 ** rng.uniform(-6, 6), 1e-6), 1e6)
            loc_p = 0.0 if rng.random() < 0.2 else rng.uniform(-1, 1) * 10 ** rng.uniform(-6, 6)
            loc_q = rng.uniform(-1, 1) * 10 ** rng.uniform(-6, 6)
            lam = rng.choice([0.0, 1.0, rng.random(), 10 ** rng.uniform(-8, 0), 1 - 10 ** rng.uniform(-7, 0)])
            args = [torch.tensor(v, dtype=dtype) for v in (loc_p, scale_p, loc_q, scale_q, lam)]
            lp, sp, lq, sq, lam_ = (Fraction(float(a)) for a in args)
            r_p, r_q = lam_ / sp**2, (1 - lam_) / sq**2
            w = r_p / (r_p + r_q)
            ref_loc, ref_var = w * lp + (1 - w) * lq, 1 / (r_p + r_q)
            loc, scale = normal_pool_params(*args)
            size = max(w * abs(lp) + (1 - w) * abs(lq), Fraction(torch.finfo(dtype).tiny))
            e_loc = float(abs(Fraction(float(loc)) - ref_loc) / size)
            e_scale = abs(float(Fraction(float(scale)) ** 2 / ref_var) - 1) / 2
            worst_loc, worst_scale = max(worst_loc, e_loc), max(worst_scale, e_scale)
            over += e_loc > tolerance or e_scale > tolerance
        print(f"Normal {dtype}: {draws} draws, max rel error loc {worst_loc:.3g}, scale {worst_scale:.3g}, "
              f"{over} draws above {tolerance:g}")


def mvn_failures(log_linear_pool, torch, dist, pairs=1000):
    g = torch.Generator().manual_seed(0)

    def random_cov(n, log10_cond):
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        shift = float(torch.rand(1, generator=g)) * 12 - 6
        eig = 10 ** (torch.rand(n, generator=g, dtype=torch.float64) * log10_cond - log10_cond / 2 + shift)
        return (q * eig) @ q.T

    nonfinite = exceptions = tried = 0
    for trial in range(pairs):
        n = int(torch.randint(2, 9, (1,), generator=g))
        cond = float(torch.rand(1, generator=g)) * 14
        cov_p, cov_q = random_cov(n, cond), random_cov(n, cond)
        loc_p, loc_q = (torch.randn(n, generator=g, dtype=torch.float64) for _ in range(2))
        lam = [float(torch.rand(1, generator=g)), 0.0, 1.0, 1e-6, 1 - 1e-6][trial % 5]
        try:  # the float32 inputs themselves must be valid
            p = dist.MultivariateNormal(loc_p.float(), cov_p.float())
            q = dist.MultivariateNormal(loc_q.float(), cov_q.float())
        except (ValueError, RuntimeError):
            continue
        tried += 1
        try:
            d = log_linear_pool(p, q, lam)
            values = torch.cat([d.loc.flatten(), d.scale_tril.flatten(), d.log_prob(d.loc + 0.1).flatten()])
            nonfinite += int((~torch.isfinite(values)).sum())
        except (ValueError, RuntimeError):
            exceptions += 1
    print(f"MultivariateNormal float32: {tried} pairs, {nonfinite} non-finite values, {exceptions} exceptions")


def timing(new, baseline_file, torch):
    spec = importlib.util.spec_from_file_location("baseline_pooling", baseline_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    old = module.normal_pool_params
    torch.set_num_threads(1)
    for shape, lam_shape, reps in [((128,), (128,), 2000), ((6889, 128), (6889, 1), 10)]:
        g = torch.Generator().manual_seed(0)
        args = [torch.randn(shape, generator=g), torch.rand(shape, generator=g) + 0.1,
                torch.randn(shape, generator=g), torch.rand(shape, generator=g) + 0.1]
        args = [a.requires_grad_() for a in args]
        lam = torch.rand(lam_shape, generator=g)

        def run(f):
            start = time.perf_counter()
            for _ in range(reps):
                loc, scale = f(*args, lam)
                (loc.sum() + scale.sum()).backward()
            return (time.perf_counter() - start) / reps * 1e3

        times = {"baseline": [], "now": []}
        for _ in range(7):
            times["baseline"].append(run(old))
            times["now"].append(run(new))
        b, n = statistics.median(times["baseline"]), statistics.median(times["now"])
        print(f"normal_pool_params fwd+bwd {shape}: baseline {b:.4f} ms, now {n:.4f} ms, ratio {n / b:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=None)
    parser.add_argument("--baseline-file", default=None)
    parser.add_argument("--draws", type=int, default=20000)
    args = parser.parse_args()
    if args.root:
        sys.path.insert(0, args.root)
    import pyro.distributions as dist
    import torch

    from pyro_probmix.pooling import log_linear_pool, normal_pool_params

    warnings.simplefilter("ignore")
    normal_errors(normal_pool_params, torch, args.draws)
    mvn_failures(log_linear_pool, torch, dist)
    if args.baseline_file:
        timing(normal_pool_params, args.baseline_file, torch)


if __name__ == "__main__":
    main()
