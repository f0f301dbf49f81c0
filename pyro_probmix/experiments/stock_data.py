# SPDX-License-Identifier: Apache-2.0
"""
The stock windows of §6.3: daily Open, High, Low, Close prices of a Yahoo-Finance CSV cut into
sliding windows and split chronologically, as a :class:`~pyro_probmix.experiments.data.SplitData`.
"""
import csv
import datetime as _dt
import math
from pathlib import Path

import numpy as np

from .data import ExperimentError, SplitData, _f32

__all__ = ["STOCK_TICKERS", "load_stock", "stock_split"]

#: the four stocks of Tables 2 and 4
STOCK_TICKERS = ("GME", "GOOG", "NVDA", "RCL")
STOCK_START, STOCK_END = _dt.date(2019, 1, 1), _dt.date(2021, 1, 1)


def load_stock(path, start=STOCK_START, end=STOCK_END):
    """Dates and the ``(T, 4)`` Open, High, Low, Close prices of a Yahoo-Finance CSV with
    ``start <= date < end``.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name, "TOY.csv")
    >>> rows = [("2019-01-03", 2, 3, 1, 2.5), ("2019-01-02", 1, 2, 0.5, 1.5), ("2018-12-31", 9, 9, 9, 9)]
    >>> with open(path, "w", newline="") as fh:
    ...     csv.writer(fh).writerows([("Date", "Open", "High", "Low", "Close")] + rows)
    >>> dates, ohlc = load_stock(path)  # sorted by date, 2018 left out
    >>> [d.isoformat() for d in dates], ohlc.shape, ohlc[0].tolist()
    (['2019-01-02', '2019-01-03'], (2, 4), [1.0, 2.0, 0.5, 1.5])
    >>> tmp.cleanup()
    """
    path = Path(path)
    if not path.is_file():
        raise ExperimentError(
            f"missing file {path}: pass --data-root DIR (a folder of <TICKER>.csv), set $PROBMIX_DATA (the "
            f"folder holding stocks/), or run `python -m pyro_probmix.experiments download`"
        )
    dates, rows = [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"Date", "Open", "High", "Low", "Close"} - set(reader.fieldnames or [])
        if missing:
            raise ExperimentError(f"{path}: missing column(s) {sorted(missing)} (expected a Yahoo-Finance CSV)")
        for line, row in enumerate(reader, start=2):
            try:
                day = _dt.date.fromisoformat(row["Date"].strip())
            except ValueError:
                raise ExperimentError(f"{path}, line {line}: bad date {row['Date']!r}") from None
            if not start <= day < end:
                continue
            try:
                values = [float(row[k]) for k in ("Open", "High", "Low", "Close")]
            except (TypeError, ValueError):
                raise ExperimentError(f"{path}, line {line}: non-numeric price") from None
            if not all(math.isfinite(v) for v in values):
                raise ExperimentError(f"{path}, line {line}: NaN or inf price")
            dates.append(day)
            rows.append(values)
    if not rows:
        raise ExperimentError(f"{path}: no rows between {start} and {end}")
    order = np.argsort(np.array([d.toordinal() for d in dates]), kind="stable")
    return [dates[i] for i in order], np.asarray(rows, dtype=np.float64)[order]


def stock_split(path, window=42, horizon=21, fractions=(0.6, 0.2, 0.2)):
    """Sliding windows of a stock (§6.3) split chronologically into train / validation / test.

    Sample ``i``: ``x_i`` = OHLC of days ``i .. i + W - 1`` (shape ``(W, 4)``), ``y_i`` = Close of
    day ``i + W - 1 + H``. The samples, in time order, are cut into contiguous blocks of
    ``fractions``; the ``H`` samples before the validation and before the test block are dropped,
    so that every training (validation) target is known on the day the first validation (test)
    forecast is issued: no label from the future of an evaluated forecast is trained on.
    Prices are standardised by the mean and std of all prices (OHLC) in the training windows, the
    same scalars for inputs and target; NLL and RMSE are reported on the price scale.

    Forty days whose Close is ``10, 11, 12, ...``, windows of 5 days, targets 2 days ahead:

    >>> import datetime, tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> path = Path(tmp.name, "TOY.csv")
    >>> days = [datetime.date(2019, 1, 1) + datetime.timedelta(i) for i in range(40)]
    >>> rows = [(day, c, c + 1, c - 1, c) for c, day in enumerate(days, start=10)]
    >>> with open(path, "w", newline="") as fh:
    ...     csv.writer(fh).writerows([("Date", "Open", "High", "Low", "Close")] + rows)
    >>> data = stock_split(path, window=5, horizon=2)
    >>> data.x_train.shape, data.x_val.shape, data.x_test.shape
    ((18, 5, 4), (6, 5, 4), (6, 5, 4))
    >>> round(float(data.y_train[0]) * data.y_std + data.y_mean, 3)  # Close of day 5 - 1 + 2
    16.0
    >>> tmp.cleanup()
    """
    dates, ohlc = load_stock(path)
    n = len(ohlc) - window - horizon + 1
    if n < 20:
        raise ExperimentError(f"{path}: {len(ohlc)} days are too few for windows of {window} + {horizon}")
    x = np.stack([ohlc[i : i + window] for i in range(n)])
    y = ohlc[window - 1 + horizon :, 3][:n]
    usable = n - 2 * horizon
    n_train = int(round(fractions[0] * usable))
    n_val = int(round(fractions[1] * usable))
    tr = np.arange(0, n_train)
    va = np.arange(n_train + horizon, n_train + horizon + n_val)
    te = np.arange(n_train + 2 * horizon + n_val, n)
    mean, std = float(x[tr].mean()), float(x[tr].std())
    scale = lambda a: _f32((a - mean) / std)  # noqa: E731
    target_day = lambda i: dates[i + window - 1 + horizon].isoformat()  # noqa: E731
    return SplitData(
        scale(x[tr]), scale(y[tr]), scale(x[va]), scale(y[va]), scale(x[te]), scale(y[te]),
        y_mean=mean, y_std=std,
        info={
            "n_train": len(tr), "n_val": len(va), "n_test": len(te),
            "train_targets": [target_day(tr[0]), target_day(tr[-1])],
            "val_targets": [target_day(va[0]), target_day(va[-1])],
            "test_targets": [target_day(te[0]), target_day(te[-1])],
        },
    )
