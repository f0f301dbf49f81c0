# SPDX-License-Identifier: Apache-2.0
"""
The registry of the paper's methods (§6): a method is a name plus hyper-parameters, resolved to
the *same* training loop (:func:`pyro_probmix.experiments.train.train_group`).

ERM trains without the handler. Every other method trains inside
:func:`~pyro_probmix.probmix`; the mixup baselines are the special cases of Theorems 4.5-4.7:

============================  ==========================================================
Mix, LocKMix                  the *input* is an embedding site
                              ``embedding("x", Normal(x, 1).to_event(1), mean=True)``: the
                              pool of two homoscedastic Gaussians propagated by its mean is
                              ``lam x_i + (1 - lam) x_j``, i.e. input mixup.
M-Mix, LocKM-Mix              the same at the first hidden layer ``h(x)`` (manifold mixup).
ProbMix, LocKProbMix          log-linear fusion of the likelihoods (no embedding site).
M-ProbMix, LocKM-ProbMix      ``z ~ Normal(h(x), sigma(x))`` at the first hidden layer, the
                              scale from a head sharing the encoder; sampled in training,
                              its mean at prediction.
M-ProbMix-star, LocKM-...     as M-ProbMix with a separate variance network for ``sigma(x)``
                              and a first layer of half the width (§6.2); the predictive
                              integrates over the embedding (Monte Carlo mixture).
M-ERM, M-ERM-star             controls (not in the paper): the embedding of M-ProbMix /
                              M-ProbMix-star, ``z ~ q(z|x)`` drawn in training, with no
                              handler (no partner, no fusion, the plain likelihood), so that
                              noise injection and fusion can be told apart.
============================  ==========================================================

Selection budgets are equal: every mixing method selects among the paper's 10 points of
``(alpha, beta)``, and the methods without mixing (ERM and the controls) among as many weight
decays (:func:`weight_decay_grid`), the regulariser a careful experimenter would tune for them.
:func:`control_of` names each method's no-mixing control.

(The homoscedastic Gaussian of Mix and M-Mix is :class:`~pyro_probmix.experiments.models.HomoscedasticNormal`,
whose registered pooling rule is the equal-scale case of the library's Gaussian rule: same values,
four times cheaper.)

Labels: the mixup baselines mix regression labels as ``lam y_i + (1 - lam) y_j``
(``label_fusion="log_linear"`` with a Gaussian kernel; with ``beta = 0`` this is exactly the mixed
label) and classification labels one-hot (``label_fusion="linear"``, Assumption 4.2). The ProbMix
family uses ``label_fusion="linear"`` (Assumption 4.2, the handler's default) in both tasks.
``LocK*`` methods pair each row with one of its ``k = 5`` nearest training neighbours
(:class:`~pyro_probmix.graphs.KNNGraph`), the others with any other row
(:class:`~pyro_probmix.graphs.FullGraph`). ``lam ~ Beta(alpha, alpha)``.

>>> resolve_method("lockm-probmix", alpha=0.1).name
'LocKM-ProbMix'
"""
import math
from dataclasses import dataclass

__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "PAPER_UCI_METHODS",
    "PAPER_STOCK_METHODS",
    "CONTROL_METHODS",
    "WEIGHT_DECAYS",
    "Method",
    "MethodSpec",
    "UnknownMethodError",
    "canonical_name",
    "control_of",
    "get_spec",
    "resolve_method",
    "selection_grid",
    "weight_decay_grid",
]


class UnknownMethodError(ValueError):
    """An unknown method name; the message lists the valid ones.

    >>> try:
    ...     canonical_name("SuperMix")
    ... except UnknownMethodError as e:
    ...     print(isinstance(e, ValueError), str(e).split(";")[0])
    True unknown method 'SuperMix'
    """


@dataclass(frozen=True)
class MethodSpec:
    """What a method *is* (fixed), as opposed to its hyper-parameters.

    mixing: ``"none"`` (ERM and the controls), ``"input"`` (Mix), ``"hidden"`` (manifold
    variants) or ``"likelihood"`` (ProbMix). embedding: ``"none"``, ``"mean"`` (homoscedastic,
    mean propagated: mixup) or ``"gaussian"`` (learned scale, sampled, at the first hidden layer:
    M-ProbMix, M-ERM). ``separate_variance``: the scale comes from its own network and the first
    layer is halved (the star variants).

    >>> spec = METHODS["LocKM-Mix"]
    >>> spec.mixing, spec.embedding, spec.local, spec.uses_handler
    ('hidden', 'mean', True, True)
    >>> METHODS["M-ERM"].uses_handler, METHODS["M-ERM"].embedding
    (False, 'gaussian')
    """

    name: str
    mixing: str
    embedding: str = "none"
    local: bool = False
    separate_variance: bool = False
    family: str = "erm"  # "erm" (no mixing) | "mixup" | "probmix": label fusion and selection grid
    paper_label: str = ""  # column header in the paper's tables

    @property
    def uses_handler(self):
        return self.mixing != "none"


_SPECS = [
    MethodSpec("ERM", "none", paper_label="ERM"),
    MethodSpec("Mix", "input", "mean", False, family="mixup", paper_label="Mix."),
    MethodSpec("LocKMix", "input", "mean", True, family="mixup", paper_label="LockMix."),
    MethodSpec("M-Mix", "hidden", "mean", False, family="mixup", paper_label="M-Mix."),
    MethodSpec("LocKM-Mix", "hidden", "mean", True, family="mixup", paper_label="LockM-Mix."),
    MethodSpec("ProbMix", "likelihood", "none", False, family="probmix", paper_label="ProbMix."),
    MethodSpec("LocKProbMix", "likelihood", "none", True, family="probmix", paper_label="LockProbMix."),
    MethodSpec("M-ProbMix", "hidden", "gaussian", False, family="probmix", paper_label="M-ProbMix."),
    MethodSpec("LocKM-ProbMix", "hidden", "gaussian", True, family="probmix", paper_label="LockM-ProbMix."),
    MethodSpec("M-ProbMix-star", "hidden", "gaussian", False, True, family="probmix", paper_label="M-ProbMix.⋆"),
    MethodSpec(
        "LocKM-ProbMix-star", "hidden", "gaussian", True, True, family="probmix", paper_label="LockM-ProbMix.⋆"
    ),
    MethodSpec("M-ERM", "none", "gaussian"),
    MethodSpec("M-ERM-star", "none", "gaussian", separate_variance=True),
]

#: canonical name -> spec: the paper's methods in its column order, then the controls
METHODS = {spec.name: spec for spec in _SPECS}
#: the canonical names of the thirteen methods (the paper's eleven, then the two controls)
METHOD_NAMES = tuple(METHODS)
#: the columns of Tables 1 and 3 (UCI): the paper's eleven methods
PAPER_UCI_METHODS = tuple(name for name in METHOD_NAMES if METHODS[name].paper_label)
#: the columns of Tables 2 and 4 (stocks), the paper's methods but the star variants
PAPER_STOCK_METHODS = tuple(name for name in PAPER_UCI_METHODS if not METHODS[name].separate_variance)
#: the no-mixing controls of the stochastic-embedding methods (not in the paper)
CONTROL_METHODS = tuple(name for name in METHOD_NAMES if not METHODS[name].paper_label)

_LOOKUP = {name.lower(): name for name in METHOD_NAMES}
# spellings of the star in the paper, and its "Lock" typo
for _name in METHOD_NAMES:
    if _name.endswith("-star"):
        base = _name[: -len("-star")].lower()
        for suffix in ("*", "⋆", "star", "_star"):
            _LOOKUP.setdefault(base + suffix, _name)


def canonical_name(name):
    """The registry's spelling of a method name (case-insensitive; ``*``/``⋆`` mean ``-star``).

    >>> canonical_name("m-probmix*")
    'M-ProbMix-star'
    """
    if not isinstance(name, str):
        raise UnknownMethodError(f"a method name must be a str, got {name!r}")
    key = name.strip().lower()
    if key in _LOOKUP:
        return _LOOKUP[key]
    raise UnknownMethodError(
        f"unknown method {name!r}; valid methods (case-insensitive): {', '.join(METHOD_NAMES)}"
    )


def get_spec(name):
    """The :class:`MethodSpec` of method ``name`` (any spelling :func:`canonical_name` accepts).

    >>> spec = get_spec("lockm-probmix*")
    >>> spec.name, spec.embedding, spec.separate_variance
    ('LocKM-ProbMix-star', 'gaussian', True)
    """
    return METHODS[canonical_name(name)]


def control_of(name):
    """The no-mixing control of method ``name``: the method trained the same way without a
    partner. ERM for the mixup baselines, ProbMix and LocKProbMix (and for the controls
    themselves); M-ERM for M-ProbMix and LocKM-ProbMix; M-ERM-star for the star variants;
    ``None`` for ERM.

    >>> [control_of(m) for m in ("LocKM-Mix", "ProbMix", "LocKM-ProbMix", "m-probmix*", "M-ERM", "ERM")]
    ['ERM', 'ERM', 'M-ERM', 'M-ERM-star', 'ERM', None]
    """
    spec = get_spec(name)
    if spec.name == "ERM":
        return None
    if spec.family == "erm" or spec.embedding != "gaussian":
        return "ERM"
    return "M-ERM-star" if spec.separate_variance else "M-ERM"


def weight_decay_grid(size):
    """``size`` weight decays: 0, then ``size - 1`` points log-spaced over ``[1e-6, 1e-2]`` (3
    significant digits; one point: the geometric middle 1e-4).

    The training loss is the mean NLL per row, so a weight decay ``wd`` (an L2 penalty
    ``wd / 2 * ||theta||^2``) is a Gaussian prior of precision ``wd * N`` on the summed
    log-likelihood. With N from ~250 (yacht) to ~10,000 training rows, ``1e-6`` puts the prior
    standard deviation at 10 or more, far wider than any weight (no effect), and ``1e-2``
    at 0.1 to 0.6, the scale of the initial weights (``1 / sqrt(d_in)``): the range runs from
    no regularisation to as strong as is sensible.

    >>> weight_decay_grid(10)
    (0.0, 1e-06, 3.16e-06, 1e-05, 3.16e-05, 0.0001, 0.000316, 0.001, 0.00316, 0.01)
    >>> weight_decay_grid(2), weight_decay_grid(1)
    ((0.0, 0.0001), (0.0,))
    """
    if not (isinstance(size, int) and size >= 1):
        raise ValueError(f"a weight-decay grid needs a size >= 1, got {size!r}")
    points = size - 1
    exponents = [-4.0] if points == 1 else [-6.0 + 4.0 * k / (points - 1) for k in range(points)]
    return (0.0,) + tuple(float(f"{10.0 ** e:.3g}") for e in exponents)


#: the weight decays the no-mixing methods select among: as many as the paper's alpha x beta grid
WEIGHT_DECAYS = weight_decay_grid(10)


def selection_grid(name, alphas, betas, weight_decays=None):
    """The hyper-parameter dicts method ``name`` selects among on validation data: the
    ``alphas x betas`` grid for the mixing methods; ``weight_decays`` for the methods without
    mixing (ERM, M-ERM, M-ERM-star), by default :func:`weight_decay_grid` of the same size as the
    ``(alpha, beta)`` grid, so that every method gets the same selection budget.

    >>> len(selection_grid("ProbMix", (0.01, 0.05, 0.1, 0.5, 1.0), (0.0, 0.01)))
    10
    >>> selection_grid("M-ERM", (0.1, 1.0), (0.0,))
    [{'weight_decay': 0.0}, {'weight_decay': 0.0001}]
    >>> selection_grid("ERM", (0.1,), (0.0,), weight_decays=(0.0, 0.01))
    [{'weight_decay': 0.0}, {'weight_decay': 0.01}]
    """
    if get_spec(name).family == "erm":
        if weight_decays is None:
            weight_decays = weight_decay_grid(len(alphas) * len(betas))
        return [{"weight_decay": float(wd)} for wd in weight_decays]
    return [{"alpha": float(a), "beta": float(b)} for a in alphas for b in betas]


#: default hyper-parameters; alpha and beta (weight decay for the methods without mixing) are
#: selected on validation data by the sweeps
DEFAULT_HPARAMS = {"alpha": 0.1, "beta": 0.0, "k": 5, "weight_decay": 0.0}


@dataclass(frozen=True)
class Method:
    """A method resolved with its hyper-parameters: everything the training loop needs.

    ``label_fusion=None`` means the task default (see the module docstring). ``predict`` is how
    the embedding is used at prediction: ``"mean"`` (z = h(x)) or ``"mc"`` (Monte Carlo mixture
    over ``mc_samples`` draws of z); ``None`` means ``"mc"`` for the star variants and ``"mean"``
    otherwise. ``weight_decay``: Adam's L2 penalty on every parameter (0: none).

    >>> mix = Method(get_spec("Mix"), alpha=0.5)
    >>> mix.handler_kwargs("regression")
    {'alpha': 0.5, 'beta': 0.0, 'label_fusion': 'log_linear'}
    >>> star = resolve_method("M-ProbMix-star", mc_samples=8)
    >>> star.prediction_mode(), star.describe()
    ('mc', 'M-ProbMix-star(alpha=0.1, beta=0.0, predict=mc, mc_samples=8)')
    """

    spec: MethodSpec
    alpha: float = DEFAULT_HPARAMS["alpha"]
    beta: float = DEFAULT_HPARAMS["beta"]
    k: int = DEFAULT_HPARAMS["k"]
    label_fusion: object = None
    predict: object = None
    mc_samples: int = 32
    weight_decay: float = DEFAULT_HPARAMS["weight_decay"]

    @property
    def name(self):
        return self.spec.name

    @property
    def uses_handler(self):
        return self.spec.uses_handler

    def prediction_mode(self):
        """How the embedding is used at prediction, ``"mean"`` or ``"mc"`` (``"mean"`` for
        methods without a Gaussian embedding)."""
        if self.spec.embedding != "gaussian":
            return "mean"
        if self.predict is not None:
            return self.predict
        return "mc" if self.spec.separate_variance else "mean"

    def label_fusion_for(self, task):
        """The ``label_fusion`` of the handler in ``task`` (``"regression"`` or
        ``"classification"``): the one given, else the task default (module docstring)."""
        if self.label_fusion is not None:
            return self.label_fusion
        if self.spec.family == "mixup" and task == "regression":
            return "log_linear"  # mixed label lam y_i + (1 - lam) y_j (exact for beta = 0)
        return "linear"  # one-hot mixing (Assumption 4.2)

    def hparams(self):
        """The hyper-parameters that identify a run (part of a record's key): those the method
        uses; ``weight_decay`` only when it is not 0, so that runs without it keep the keys they
        had before it existed.

        >>> resolve_method("M-ERM", weight_decay=1e-4).hparams()
        {'weight_decay': 0.0001, 'predict': 'mean'}
        """
        out = {}
        if self.uses_handler:
            out.update(alpha=self.alpha, beta=self.beta)
            if self.spec.local:
                out["k"] = self.k
            if self.label_fusion is not None:
                out["label_fusion"] = self.label_fusion
        if self.weight_decay:
            out["weight_decay"] = self.weight_decay
        if self.spec.embedding == "gaussian":
            out["predict"] = self.prediction_mode()
            if self.prediction_mode() == "mc":
                out["mc_samples"] = self.mc_samples
        return out

    def handler_kwargs(self, task):
        """Keyword arguments of :func:`~pyro_probmix.probmix` besides the graph."""
        return {"alpha": self.alpha, "beta": self.beta, "label_fusion": self.label_fusion_for(task)}

    def describe(self):
        """A short label, e.g. ``"ProbMix(alpha=0.1, beta=0.0)"``."""
        hp = ", ".join(f"{k}={v}" for k, v in self.hparams().items())
        return f"{self.name}({hp})" if hp else self.name

    def with_hparams(self, **hparams):
        """This method with some hyper-parameters replaced (see :func:`resolve_method`)."""
        return resolve_method(self.name, **{**self.hparams(), **hparams})


def resolve_method(name, **hparams):
    """The :class:`Method` ``name`` with hyper-parameters ``hparams``.

    Accepted hyper-parameters: ``alpha`` (> 0), ``beta`` (>= 0), ``k`` (int >= 1),
    ``label_fusion`` (``"linear"``/``"log_linear"``), ``predict`` (``"mean"``/``"mc"``),
    ``mc_samples`` (int >= 1), ``weight_decay`` (>= 0, every method). Hyper-parameters a method
    does not use are ignored (ERM ignores all but ``weight_decay``), so one grid can be applied
    to every method.

    >>> resolve_method("ERM", alpha=0.5).hparams()
    {}
    >>> resolve_method("ERM", weight_decay=0.01).hparams()
    {'weight_decay': 0.01}
    >>> resolve_method("LocKMix", alpha=0.5).hparams()
    {'alpha': 0.5, 'beta': 0.0, 'k': 5}
    """
    spec = get_spec(name)
    unknown = set(hparams) - {"alpha", "beta", "k", "label_fusion", "predict", "mc_samples", "weight_decay"}
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {sorted(unknown)} for {spec.name}; expected alpha, beta, k, "
            f"label_fusion, predict, mc_samples, weight_decay"
        )
    alpha = float(hparams.get("alpha", DEFAULT_HPARAMS["alpha"]))
    beta = float(hparams.get("beta", DEFAULT_HPARAMS["beta"]))
    k = hparams.get("k", DEFAULT_HPARAMS["k"])
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    label_fusion = hparams.get("label_fusion")
    if label_fusion not in (None, "linear", "log_linear"):
        raise ValueError(f"label_fusion must be 'linear' or 'log_linear', got {label_fusion!r}")
    predict = hparams.get("predict")
    if predict not in (None, "mean", "mc"):
        raise ValueError(f"predict must be 'mean' or 'mc', got {predict!r}")
    mc_samples = int(hparams.get("mc_samples", 32))
    if mc_samples < 1:
        raise ValueError(f"mc_samples must be >= 1, got {mc_samples}")
    weight_decay = float(hparams.get("weight_decay", DEFAULT_HPARAMS["weight_decay"]))
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    return Method(spec, alpha, beta, k, label_fusion, predict, mc_samples, weight_decay)
