# SPDX-License-Identifier: Apache-2.0
"""
HNSW index settings for ``KNNGraph`` at scale: for each (M, efConstruction), the build time, the
smallest efSearch of 8, 12, ..., 48 whose recall@5 on 1,000 probe rows reaches the calibration's
aim (0.9956, :func:`pyro_probmix.knn.hnsw_neighbors`), and the projected search of all rows.

Usage::

    python benchmarks/bench_hnsw_settings.py [--rows 1000000] [--dims 8] [--threads 2]

Needs FAISS (``pip install faiss-cpu``). Results are written down in
``benchmarks/README.md``.
"""
import argparse
import time

import numpy as np
import torch

from pyro_probmix.knn import _searched, exact_neighbors, neighbor_recall

SETTINGS = ((8, 20), (10, 20), (12, 12), (12, 16), (12, 20), (16, 12), (16, 16), (16, 20))
AIM = 0.9956


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    x = torch.randn(args.rows, args.dims, generator=torch.Generator().manual_seed(0))
    data = np.ascontiguousarray(x.numpy())
    probes = torch.randperm(args.rows, generator=torch.Generator().manual_seed(1))[:1000]
    exact = exact_neighbors(x, 5, probes)
    timed_rows = min(args.rows, 200_000)
    print("| M | efConstruction | build (s) | efSearch | recall@5 | search of all rows (s, projected) | total (s) |")
    print("|---|---|---|---|---|---|---|")
    for m, ef_construction in SETTINGS:
        start = time.perf_counter()
        index = faiss.IndexHNSWFlat(args.dims, m)
        index.hnsw.efConstruction = ef_construction
        index.add(data)
        build = time.perf_counter() - start
        for ef_search in (8, 12, 16, 24, 32, 48):
            index.hnsw.efSearch = ef_search
            recall = neighbor_recall(x, probes, _searched(index, data, x, probes, 5), exact)
            if recall >= AIM or ef_search == 48:
                break
        start = time.perf_counter()
        _searched(index, data, x, torch.arange(timed_rows), 5)
        search = (time.perf_counter() - start) * args.rows / timed_rows
        print(f"| {m} | {ef_construction} | {build:.1f} | {ef_search} | {recall:.4f} | {search:.1f} | {build + search:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
