# SPDX-License-Identifier: Apache-2.0
"""
The evidence behind "best" in a report: each method against ERM and against its no-mixing
control (:func:`~pyro_probmix.experiments.methods.control_of`), paired over the units (split,
seed) both ran, as wins out of ``n`` and the two-sided Wilcoxon signed-rank p
(:mod:`~pyro_probmix.experiments.stats`). A method *beats* a reference when p < 0.05 and it
has more wins than losses.
"""
import math

from .methods import METHODS, control_of
from .stats import paired_comparison

__all__ = ["SIGNIFICANCE", "compare", "beats", "paired_tables", "control_sentence"]

#: the level below which a paired p counts as evidence
SIGNIFICANCE = 0.05


def _values(runs, metric, better):
    worst = math.inf if better == "min" else -math.inf
    out = {}
    for run in runs:
        value = run["metrics"]["test"].get(metric)
        if value is not None:
            out[(run["key"]["split"], run["key"]["seed"])] = worst if math.isnan(value) else float(value)
    return out


def compare(runs, reference, metric, better):
    """The :class:`~pyro_probmix.experiments.stats.PairedComparison` of ``runs`` against the
    ``reference`` runs on the units both have (``None`` when they share none); a NaN score counts
    as the worst.

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> def runs(method, nlls):
    ...     return [{"key": RunSpec.make("uci", "yacht", method, s).key(), "metrics": {"test": {"nll": v}}}
    ...             for s, v in enumerate(nlls)]
    >>> compare(runs("ProbMix", [1.0, 2.0, 0.5]), runs("ERM", [1.5, 2.5]), "nll", "min")  # units 0 and 1
    PairedComparison(wins=2, losses=0, ties=0, n=2, pvalue=0.5)
    """
    mine, ref = _values(runs, metric, better), _values(reference, metric, better)
    units = [u for u in mine if u in ref]
    if not units:
        return None
    return paired_comparison([mine[u] for u in units], [ref[u] for u in units], better)


def beats(comparison):
    """Whether a comparison is evidence of a better method: p < :data:`SIGNIFICANCE` and more
    wins than losses.

    >>> from pyro_probmix.experiments.stats import PairedComparison
    >>> beats(PairedComparison(6, 0, 0, 6, 0.031)), beats(PairedComparison(5, 0, 1, 6, 0.062)), beats(None)
    (True, False, False)
    """
    return comparison is not None and comparison.pvalue < SIGNIFICANCE and comparison.wins > comparison.losses


def _cell(comparison):
    if comparison is None:
        return "–"
    text = f"{comparison.wins}/{comparison.n}, p={comparison.pvalue:.2g}"
    return f"**{text}**" if beats(comparison) else text


def _table(header, columns, rows):
    lines = [f"| Dataset | {' | '.join(header)} |", "|---" * (len(header) + 1) + "|"]
    lines += [f"| {ds} | " + " | ".join(_cell(cells.get(c)) for c in columns) + " |" for ds, cells in rows.items()]
    return "\n".join(lines)


def paired_tables(datasets, methods, metric, better, label):
    """Markdown: wins/n and p of every method against ERM, then of the methods whose control is
    not ERM against that control; ``datasets`` is ``{dataset: {method: [runs]}}``. Empty when
    ERM and the controls are all missing.

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> def runs(method, nlls):
    ...     return [{"key": RunSpec.make("uci", "yacht", method, s).key(), "metrics": {"test": {"nll": v}}}
    ...             for s, v in enumerate(nlls)]
    >>> data = {"yacht": {"ERM": runs("ERM", [2, 3, 4, 5, 6]), "M-ERM": runs("M-ERM", [1, 2, 3, 4, 5]),
    ...                   "M-ProbMix": runs("M-ProbMix", [0, 3, 2, 3, 4])}}
    >>> print(paired_tables(data, ["ERM", "M-ERM", "M-ProbMix"], "nll", "min", "NLL"))
    Test NLL, paired against ERM (wins/n, two-sided Wilcoxon p; **bold**: p < 0.05 and more wins than losses):
    <BLANKLINE>
    | Dataset | M-ERM | M-ProbMix |
    |---|---|---|
    | yacht | 5/5, p=0.062 | 4/5, p=0.12 |
    <BLANKLINE>
    Paired against the no-mixing control:
    <BLANKLINE>
    | Dataset | M-ProbMix vs M-ERM |
    |---|---|
    | yacht | 4/5, p=0.38 |
    """
    parts = []
    against_erm = [m for m in methods if m != "ERM"]
    if "ERM" in methods and against_erm:
        rows = {ds: {m: compare(ms.get(m, []), ms.get("ERM", []), metric, better) for m in against_erm}
                for ds, ms in datasets.items()}
        parts += [f"Test {label}, paired against ERM (wins/n, two-sided Wilcoxon p; **bold**: p < {SIGNIFICANCE} "
                  "and more wins than losses):", "", _table(against_erm, against_erm, rows)]
    own = [m for m in methods if control_of(m) not in (None, "ERM") and control_of(m) in methods]
    if own:
        rows = {ds: {m: compare(ms.get(m, []), ms.get(control_of(m), []), metric, better) for m in own}
                for ds, ms in datasets.items()}
        parts += ["", "Paired against the no-mixing control:", "",
                  _table([f"{m} vs {control_of(m)}" for m in own], own, rows)]
    return "\n".join(parts).strip("\n")


def control_sentence(datasets, methods, metric="nll", better="min", label="NLL"):
    """One sentence: which mixing methods beat their no-mixing control on test ``label``, on
    which datasets (and which could not be compared because their control was not run).

    >>> from pyro_probmix.experiments.records import RunSpec
    >>> def runs(method, nlls):
    ...     return [{"key": RunSpec.make("uci", "yacht", method, s).key(), "metrics": {"test": {"nll": v}}}
    ...             for s, v in enumerate(nlls)]
    >>> data = {"yacht": {"ERM": runs("ERM", range(2, 8)), "ProbMix": runs("ProbMix", range(6)),
    ...                   "M-ProbMix": runs("M-ProbMix", range(6))}}
    >>> print(control_sentence(data, ["ERM", "ProbMix", "M-ProbMix"]))
    Beat their no-mixing control on test NLL (paired Wilcoxon p < 0.05, more wins than losses): ProbMix (vs ERM) on yacht (6/6, p=0.031). Not compared, their control was not run: M-ProbMix (M-ERM).
    """
    found, missing = [], []
    for m in methods:
        if m not in METHODS or METHODS[m].family == "erm":
            continue
        control = control_of(m)
        if control not in methods:
            missing.append(f"{m} ({control})")
            continue
        for ds, ms in datasets.items():
            c = compare(ms.get(m, []), ms.get(control, []), metric, better)
            if beats(c):
                found.append(f"{m} (vs {control}) on {ds} ({c.wins}/{c.n}, p={c.pvalue:.2g})")
    rule = f"(paired Wilcoxon p < {SIGNIFICANCE}, more wins than losses)"
    text = (f"Beat their no-mixing control on test {label} {rule}: " + "; ".join(found) + "." if found
            else f"No method beats its no-mixing control on test {label} {rule}.")
    if missing:
        text += " Not compared, their control was not run: " + ", ".join(missing) + "."
    return text
