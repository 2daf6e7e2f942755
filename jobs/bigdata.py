"""A fitness over a large dataset that every worker loads once: ``evocluster.share``.

The master makes (or would load) a regression dataset of ``--mb`` megabytes and shares it with
``evocluster.share("data", (X, y))``; the fitness reads it with ``evocluster.shared("data")`` and
returns the mean squared error of a linear model whose coefficients are the genome.  A
(mu + lambda) evolution strategy fits the coefficients.

What it shows: the dataset never crosses the wire once per task.  Its numpy arrays reach the
workers on the master's host (local, MPI ranks there, SCOOP's workers when all run there)
through one copy in shared memory that they all map, so the master sends references only; on
each other host, one worker is sent it and writes that host's copy, which the others map.  At
the end the job prints the bytes the master sent (``executor.stats()``) next to the dataset's
size.  The result depends only on ``--seed``.

Run it::

    mpiexec -n 5 python -m evocluster jobs/bigdata.py --mb 100
    python -m evocluster jobs/bigdata.py
    python -m scoop -n 4 jobs/bigdata.py --mb 10

Options: ``--seed``, ``--mb``, ``--features``, ``--ngen``, ``--mu``, ``--lambda``, ``--json PATH``.
"""

import argparse
import functools
import json

import numpy as np

import evocluster
from evocluster import engine
from evocluster import operators as ops


def mse(coefficients):
    """Mean squared error of the linear model ``X @ coefficients`` on the shared dataset."""
    X, y = evocluster.shared("data")
    residual = X @ coefficients - y
    return float(residual @ residual) / len(y)


def make_data(seed, megabytes, features):
    """A dataset of about ``megabytes`` MB: X (rows x features), y = X @ truth + noise."""
    rng = np.random.default_rng(seed)
    rows = max(features, int(megabytes * 1e6 / (8 * (features + 1))))
    X = rng.standard_normal((rows, features))
    truth = np.linspace(-1.0, 1.0, features)
    y = X @ truth + 0.1 * rng.standard_normal(rows)
    return X, y


def main(seed=42, megabytes=20.0, features=8, ngen=20, mu=20, lambda_=40):
    """Share the data, run the strategy on the launcher's executor; return the Result."""
    X, y = make_data(seed, megabytes, features)
    evocluster.share("data", (X, y))
    return engine.mu_plus_lambda(
        mse,
        functools.partial(ops.random_reals, mu, features, low=-2.0, high=2.0),
        executor=evocluster.get_executor(),
        generations=ngen,
        seed=seed,
        lambda_=lambda_,
        crossover=functools.partial(ops.blend, alpha=0.3),
        mutate=functools.partial(ops.gaussian, sigma=0.2, p=0.5),
        cxpb=0.3,
        mutpb=0.7,
        weights=(-1.0,),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A fitness over a large shared dataset.")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--mb", type=float, default=20.0, help="dataset size in MB (default: 20)")
    parser.add_argument("--features", type=int, default=8, help="features (default: 8)")
    parser.add_argument("--ngen", type=int, default=20, help="generations (default: 20)")
    parser.add_argument("--mu", type=int, default=20, help="parents (default: 20)")
    parser.add_argument("--lambda", dest="lambda_", type=int, default=40, help="offspring")
    parser.add_argument("--json", metavar="PATH", help="write a JSON summary to PATH")
    args = parser.parse_args()

    result = main(args.seed, args.mb, args.features, args.ngen, args.mu, args.lambda_)
    executor = evocluster.get_executor()
    stats = executor.stats()
    X, y = evocluster.shared("data")
    data_bytes = X.nbytes + y.nbytes
    print(f"best mse {result.best_fitness[0]:.6g}  coefficients {np.round(result.best, 3)}")
    print(
        f"dataset {data_bytes / 1e6:.1f} MB; master sent {stats['bytes_sent'] / 1e6:.1f} MB in "
        f"{stats['messages_sent']} messages to {executor.n_workers} worker(s) "
        f"({stats['bytes_sent'] / max(1, data_bytes):.2f} x the dataset)"
    )
    print(f"population sha256 {result.digest()}")
    print(f"evaluated by backend {executor.backend} with {executor.n_workers} worker(s)")
    if args.json:
        summary = result.summary() | {
            "backend": executor.backend,
            "n_workers": executor.n_workers,
            "data_bytes": data_bytes,
            "stats": stats,
        }
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
