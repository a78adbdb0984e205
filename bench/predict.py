"""Purchase-model benchmark: prepare, fit and predict a 200,000-shopper shop against one SQL pass.

    .venv/bin/python bench/predict.py [--shoppers 200000] [--seed 7]

Draws a synthetic shop (~1,000,000 order rows, same-day splits and cancelled orders included) from known
BG/NBD and Gamma-Gamma parameters, then times (a) summarising the orders, fitting both models and
predicting every shopper, and (b) the baseline: one `GROUP BY shopper` pass over the same orders in an
in-memory SQLite table (loaded untimed). Prints both times, their ratio, the fitted parameters against
the true ones and the process's peak memory (maxrss).
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugin.core.purchase_forecast import fit_shop_model, predict_shoppers  # noqa: E402
from plugin.core.purchase_history import reason_not_to_fit, summarise_orders  # noqa: E402
from plugin.core.purchase_simulation import SimulatedOrders, TrueParameters, simulate_orders  # noqa: E402

TRUTH = TrueParameters(r=0.8, alpha=60.0, a=0.6, b=6.0, p=6.0, q=4.0, gamma=15.0)
END_DAY = 20_000 + 729  # two years of day numbers


def draw_shop(shoppers: int, seed: int) -> SimulatedOrders:
    """Draw the synthetic shop: first orders over the two years, 5 % split orders, 5 % cancelled."""
    return simulate_orders(
        np.random.default_rng(seed),
        TRUTH,
        shoppers=shoppers,
        first_day=END_DAY - 729,
        acquisition_days=730,
        end_day=END_DAY,
        split_share=0.05,
        cancelled_share=0.05,
    )


def time_model(orders: SimulatedOrders) -> tuple[dict[str, float], dict[str, float], int]:
    """Summarise, fit and predict; return seconds per stage, the fitted parameters and shoppers predicted."""
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return clock[-1] - clock[-2]

    summaries = summarise_orders(orders.shopper, orders.day, orders.net, orders.kept, END_DAY)
    reason = reason_not_to_fit(summaries)
    if reason:
        raise SystemExit(f"not enough data: {reason}")
    seconds = {"prepare": lap()}
    model = fit_shop_model(summaries)
    seconds["fit"] = lap()
    predictions = predict_shoppers(model, summaries)
    seconds["predict"] = lap()
    fitted = {name: getattr(model.purchases, name) for name in ("r", "alpha", "a", "b")}
    fitted |= {name: getattr(model.spend, name) for name in ("p", "q", "gamma")}
    return seconds, fitted, len(predictions.shopper)


def time_sql(orders: SimulatedOrders) -> tuple[float, int]:
    """Load the orders into in-memory SQLite (untimed), then time one GROUP BY pass over them."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE orders (shopper INTEGER, day INTEGER, amount REAL, kept INTEGER)")
    rows = zip(
        orders.shopper.tolist(), orders.day.tolist(), orders.net.tolist(), orders.kept.tolist(), strict=True
    )
    db.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", rows)
    db.commit()
    started = time.perf_counter()
    result = db.execute(
        "SELECT shopper, count(*), min(day), max(day), sum(amount) FROM orders GROUP BY shopper"
    ).fetchall()
    elapsed = time.perf_counter() - started
    db.close()
    return elapsed, len(result)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shoppers", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    orders = draw_shop(args.shoppers, args.seed)
    print(f"shop: {args.shoppers:,} shoppers, {len(orders):,} order rows ({int(orders.kept.sum()):,} kept)")
    peak_after_shop = _maxrss_mib()
    seconds, fitted, predicted = time_model(orders)
    model_seconds = sum(seconds.values())
    peak_after_model = _maxrss_mib()
    sql_seconds, groups = time_sql(orders)
    stages = ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items())
    print(f"(a) prepare + fit both models + predict {predicted:,} shoppers: {model_seconds:.2f} s ({stages})")
    print(f"(b) SQLite GROUP BY shopper over the orders ({groups:,} groups):  {sql_seconds:.2f} s")
    print(f"ratio (a)/(b): {model_seconds / sql_seconds:.2f}")
    for name, value in fitted.items():
        true = getattr(TRUTH, name)
        print(f"  {name:>5}: fitted {value:9.4f}  true {true:9.4f}  ({value / true - 1:+.1%})")
    print("peak memory (maxrss):")
    print(f"  with the shop drawn:           {peak_after_shop:.0f} MiB")
    print(f"  after the model:               {peak_after_model:.0f} MiB")
    print(f"  at the end, SQLite's table in: {_maxrss_mib():.0f} MiB")
    print(f"  the model's own allocations (tracemalloc, a second run): {_model_peak_mib(orders):.0f} MiB")


def _model_peak_mib(orders: SimulatedOrders) -> float:
    """Run the model again under tracemalloc (numpy reports its buffers to it) and return the peak in MiB."""
    tracemalloc.start()
    time_model(orders)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def _maxrss_mib() -> float:
    """Return the process's peak resident memory in MiB (Linux reports maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
