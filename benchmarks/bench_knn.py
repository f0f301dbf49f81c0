"""
Building KNNGraph at scale: construction time (standardise, build, search, recall check),
recall@k as the graph reports it, and peak memory, each configuration in a fresh process.

    python benchmarks/bench_knn.py --rows 1000000 --dims 8 64 [--data gaussian lowrank]
        [--method auto] [--threads 2] [--k 5] [--device cpu]

Data: ``gaussian`` is i.i.d. N(0, 1) in d dimensions (for d >= 32 a worst case that no cheap
index searches well: no low-dimensional structure at all); ``lowrank`` is an 8-dimensional
Gaussian mapped linearly into d dimensions plus 10 % noise per column, like real features,
whose intrinsic dimension is well below their count. Peak memory is the process's maximum
resident set (``resource.getrusage``), before (data only) and after the build; tracemalloc
would miss torch's and FAISS's native allocations. Sampling partners is timed too (B = 128).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure the checkout this file is in

def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def make_data(kind, rows, dims, seed=0):
    import torch

    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(rows, dims, generator=generator)
    latent = torch.randn(rows, 8, generator=generator) @ torch.randn(8, dims, generator=generator)
    return latent + 0.1 * latent.std(0) * torch.randn(rows, dims, generator=generator)


def measure(kind, rows, dims, method, threads, k, device):
    """One configuration, run in this process: returns the row of the table as a dict."""
    import torch

    torch.set_num_threads(threads)
    try:
        import faiss

        faiss.omp_set_num_threads(threads)
    except ImportError:
        pass
    from pyro_probmix.graphs import KNNGraph

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    x = make_data(kind, rows, dims).to(device)
    sync()
    data_peak = peak_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    graph = KNNGraph(x, k=k, method=method)
    sync()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    anchors = torch.randint(rows, (128,), device=device)
    graph.sample(anchors, rows)  # first call caches the table on the device
    sync()
    start = time.perf_counter()
    for _ in range(100):
        graph.sample(anchors, rows)
    sync()
    sample_us = (time.perf_counter() - start) / 100 * 1e6
    return {
        "rows": rows, "dims": dims, "data": kind, "device": device.type, "method": graph.method if graph.ef_search is None else f"{graph.method} (ef {graph.ef_search})", "threads": threads,
        "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1), "load": round(os.getloadavg()[0], 1),
        "recall": round(graph.recall, 4), "probes": graph.recall_probes,
        "peak_mib_data": round(data_peak), "peak_mib": round(peak_mib()), "sample_us": round(sample_us, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--data", nargs="+", choices=["gaussian", "lowrank"], default=["gaussian", "lowrank"])
    parser.add_argument("--method", default="auto", choices=["auto", "exact", "hnsw"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.data[0], args.rows[0], args.dims[0], args.method, args.threads, args.k, args.device)))
        return
    print("| N | d | data | device | method | threads | build + query: wall (s) | CPU (s) | load avg | recall@k (probes) | peak RSS (MiB): data / after | sample B=128 (µs) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rows in args.rows:
        for dims in args.dims:
            for kind in args.data:
                command = [sys.executable, __file__, "--one", "--rows", str(rows), "--dims", str(dims), "--data", kind,
                           "--method", args.method, "--threads", str(args.threads), "--k", str(args.k),
                           "--device", args.device]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    print(f"| {rows:,} | {dims} | {kind} | failed: {done.stderr.strip().splitlines()[-1]} |")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"| {r['rows']:,} | {r['dims']} | {r['data']} | {r['device']} | {r['method']} | {r['threads']} | {r['seconds']} | {r['cpu_seconds']} | {r['load']} | "
                      f"{r['recall']} ({r['probes']}) | {r['peak_mib_data']} / {r['peak_mib']} | {r['sample_us']} |", flush=True)


if __name__ == "__main__":
    main()
