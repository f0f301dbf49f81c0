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
============================  ==========================================================

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
    "Method",
    "MethodSpec",
    "UnknownMethodError",
    "canonical_name",
    "get_spec",
    "resolve_method",
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

    mixing: ``"none"`` (ERM), ``"input"`` (Mix), ``"hidden"`` (manifold variants) or
    ``"likelihood"`` (ProbMix). embedding: ``"none"``, ``"mean"`` (homoscedastic, mean propagated:
    mixup) or ``"gaussian"`` (learned scale, sampled: M-ProbMix). ``separate_variance``: the
    scale comes from its own network and the first layer is halved (the star variants).

    >>> spec = METHODS["LocKM-Mix"]
    >>> spec.mixing, spec.embedding, spec.local, spec.uses_handler
    ('hidden', 'mean', True, True)
    >>> MethodSpec("ERM", "none").uses_handler
    False
    """

    name: str
    mixing: str
    embedding: str = "none"
    local: bool = False
    separate_variance: bool = False
    family: str = "erm"  # "erm" | "mixup" | "probmix": decides the default label fusion
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
]

#: canonical name -> spec, in the paper's column order
METHODS = {spec.name: spec for spec in _SPECS}
#: the canonical names of the eleven methods, in the paper's column order
METHOD_NAMES = tuple(METHODS)
#: the columns of Tables 1 and 3 (UCI), every method
PAPER_UCI_METHODS = METHOD_NAMES
#: the columns of Tables 2 and 4 (stocks), every method but the star variants
PAPER_STOCK_METHODS = METHOD_NAMES[:9]

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


#: default hyper-parameters; alpha and beta are selected on validation data by the sweeps
DEFAULT_HPARAMS = {"alpha": 0.1, "beta": 0.0, "k": 5}


@dataclass(frozen=True)
class Method:
    """A method resolved with its hyper-parameters: everything the training loop needs.

    ``label_fusion=None`` means the task default (see the module docstring). ``predict`` is how
    the embedding is used at prediction: ``"mean"`` (z = h(x)) or ``"mc"`` (Monte Carlo mixture
    over ``mc_samples`` draws of z); ``None`` means ``"mc"`` for the star variants and ``"mean"``
    otherwise.

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
        """The hyper-parameters that identify a run (part of a record's key)."""
        if not self.uses_handler:
            return {}
        out = {"alpha": self.alpha, "beta": self.beta}
        if self.spec.local:
            out["k"] = self.k
        if self.label_fusion is not None:
            out["label_fusion"] = self.label_fusion
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
    ``mc_samples`` (int >= 1). Hyper-parameters a method does not use are ignored (ERM ignores
    all of them), so one grid can be applied to every method.

    >>> resolve_method("ERM", alpha=0.5).hparams()
    {}
    >>> resolve_method("LocKMix", alpha=0.5).hparams()
    {'alpha': 0.5, 'beta': 0.0, 'k': 5}
    """
    spec = get_spec(name)
    unknown = set(hparams) - {"alpha", "beta", "k", "label_fusion", "predict", "mc_samples"}
    if unknown:
        raise ValueError(
            f"unknown hyper-parameter(s) {sorted(unknown)} for {spec.name}; expected alpha, beta, k, "
            f"label_fusion, predict, mc_samples"
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
    return Method(spec, alpha, beta, k, label_fusion, predict, mc_samples)
