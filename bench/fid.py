"""Benchmark: the Frechet distance of kneesynth.study_b.fid against its peers, same features, one run.

From two feature sets (random, correlated, float64) every method computes the whole distance
(means, covariances, the trace of the matrix square root):

* ``kneesynth``: :func:`kneesynth.study_b.fid.frechet_distance` (trace from eigenvalues of a symmetric
  matrix: Cholesky + eigvalsh, or the nuclear norm of the cross Gram matrix when a set has fewer
  images than dimensions);
* ``scipy sqrtm``: ``scipy.linalg.sqrtm`` of the covariance product, as pytorch-fid and
  torch-fidelity do;
* ``MONAI FIDMetric``: what the pipeline used before (scipy sqrtm inside, torch around it);
* ``eigvals``: the square roots of ``numpy.linalg.eigvals`` of the (non-symmetric) product, the
  eigenvalue method of torchmetrics.

Prints process CPU seconds (minimum of --repeats) and each value's relative difference from
scipy's.

    python bench/fid.py                         # 2000 x 1024 both sides, then 300 vs 2000
    python bench/fid.py --real 2000 --synthetic 2000 --dim 2048 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=2000, help="real images (default 2000)")
    parser.add_argument("--synthetic", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=1024, help="feature dimension (default 1024)")
    parser.add_argument("--few", type=int, default=300, help="size of the smaller set of case 2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(args.threads)  # before numpy and torch load BLAS
    import numpy as np
    import scipy.linalg
    import torch
    from monai.metrics import FIDMetric

    from kneesynth.study_b.fid import frechet_distance

    torch.set_num_threads(args.threads)

    def scipy_sqrtm(real, synthetic):
        mu_r, mu_s = real.mean(0), synthetic.mean(0)
        cov_r, cov_s = np.cov(real, rowvar=False), np.cov(synthetic, rowvar=False)
        root = scipy.linalg.sqrtm(cov_r @ cov_s).real
        return float(((mu_r - mu_s) ** 2).sum() + np.trace(cov_r + cov_s - 2 * root))

    def eigvals(real, synthetic):
        mu_r, mu_s = real.mean(0), synthetic.mean(0)
        cov_r, cov_s = np.cov(real, rowvar=False), np.cov(synthetic, rowvar=False)
        trace = np.sqrt(np.linalg.eigvals(cov_r @ cov_s).real.clip(0, None)).sum()
        return float(((mu_r - mu_s) ** 2).sum() + np.trace(cov_r) + np.trace(cov_s) - 2 * trace)

    def monai(real, synthetic):
        return float(FIDMetric()(torch.from_numpy(synthetic), torch.from_numpy(real)))

    methods = {
        "kneesynth": frechet_distance,
        "scipy sqrtm": scipy_sqrtm,
        "MONAI FIDMetric": monai,
        "eigvals": eigvals,
    }
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)
    print(f"{args.threads} BLAS thread(s), numpy {np.__version__}, scipy {scipy.__version__}")
    for n_real, n_synthetic in ((args.real, args.synthetic), (args.few, args.synthetic)):
        real = rng.normal(size=(n_real, args.dim)) @ mixing
        synthetic = rng.normal(size=(n_synthetic, args.dim)) @ mixing + 0.05
        print(f"\n{n_real} real x {n_synthetic} synthetic features of dimension {args.dim}")
        values, seconds = {}, {}
        for name, method in methods.items():
            times = []
            for _ in range(args.repeats if name != "MONAI FIDMetric" else 1):
                start = time.process_time()
                values[name] = method(real, synthetic)
                times.append(time.process_time() - start)
            seconds[name] = min(times)
        reference = values["scipy sqrtm"]
        for name in methods:
            print(
                f"  {name:16s} {seconds[name]:7.3f} CPU s  {seconds[name] / seconds['kneesynth']:5.1f}x"
                f"  value {values[name]:.10g}  rel. diff. from sqrtm "
                f"{abs(values[name] - reference) / abs(reference):.1e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
