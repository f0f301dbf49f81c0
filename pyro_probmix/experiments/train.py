# SPDX-License-Identifier: Apache-2.0
"""
The one training loop of every method.

:func:`train_group` trains the ``R`` runs of a group (same method, hyper-parameters and data
shapes; different splits or seeds) in one optimisation: the Pyro model of
:func:`~pyro_probmix.experiments.models.make_model` over the ``R * N`` rows, its loss the
negative log joint ``-trace.log_prob_sum() / N`` (no latent sites, so this is the negative
ELBO), Adam on the network's parameters with the method's ``weight_decay`` (an L2 penalty on
each run's own parameters: the methods without mixing select it, the others leave it at 0).
ERM and the controls M-ERM, M-ERM-star run the model as is; every other method runs it
inside ``probmix(alpha, graph, beta=..., label_fusion=...)`` with a graph that only pairs rows of
the same run (:mod:`~pyro_probmix.experiments.blocks`). Runs do not interact: their parameters,
Adam moments and losses are separate, so each is trained exactly as it would be alone (Adam is
invariant to the loss's scale up to its epsilon).

Model selection: every ``eval_every`` epochs (and before the first) each run's validation NLL is
computed; each run keeps the parameters of its best validation NLL (§6).

Randomness: each run's initial weights come from its ``seeds`` entry and every draw of its training
(partners, lambdas, embedding noise) and of its validation predictive from its ``noise_seeds``
entry (:class:`~pyro_probmix.experiments.streams.RunStreams`), so a run's result does not depend
on the runs that share its group. With a ``checkpoint`` the whole state (parameters, Adam,
best-so-far, generators) is saved every few seconds and training resumes from it exactly.
"""
import ctypes
import functools
import math
import time
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine

from pyro_probmix import probmix

from .blocks import make_graph
from .models import forward, likelihood, make_model, make_net, sample_outputs
from .streams import RunBeta, RunStreams, derive_seed

__all__ = ["TrainConfig", "TrainResult", "train_group", "objective", "predict", "resolve_device", "keep_freed_memory",
           "check_compile_support"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings of a group.

    ``epochs`` and Adam's ``lr``; ``batch_size`` (``None``: full batch); ``eval_every``: epochs
    between validation checks; ``device``; ``val_samples``: embedding draws of the validation NLL
    of Monte Carlo predictives; ``compile``: pool the M-ProbMix embedding with a
    :func:`torch.compile` kernel (:class:`~pyro_probmix.experiments.models.CompiledPoolNormal`).

    >>> config = TrainConfig(epochs=2, batch_size=32)
    >>> config.as_dict()
    {'epochs': 2, 'lr': 0.005, 'batch_size': 32, 'eval_every': 1}
    """

    epochs: int = 1000
    lr: float = 0.005
    batch_size: object = None  # None = full batch
    eval_every: int = 1
    device: str = "cpu"
    val_samples: int = 8  # embedding draws of the validation NLL of Monte Carlo predictives
    compile: bool = False  # pool the M-ProbMix embedding with a torch.compile'd kernel

    def as_dict(self):
        """The settings that are part of a run's key: ``epochs``, ``lr``, ``batch_size`` and
        ``eval_every``."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "eval_every": self.eval_every}


@dataclass
class TrainResult:
    """What :func:`train_group` returns.

    ``net``: the network, holding each run's best-validation parameters; ``best_epoch`` and
    ``best_val_nll`` (standardised scale): one entry per run; ``final_train_loss``: the last
    training loss per row, averaged over the runs; ``steps``: optimisation steps; ``seconds``:
    training time of the group.

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> x, y = torch.randn(1, 6, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(1, 6)
    >>> result = train_group(resolve_method("ERM"), "regression", "mlp", x, y, x, y, seeds=[0],
    ...                      config=TrainConfig(epochs=2), hidden=(8, 4))
    >>> type(result.net).__name__, result.steps, len(result.best_val_nll), math.isfinite(result.final_train_loss)
    ('Net', 2, 1, True)
    """

    net: torch.nn.Module
    best_epoch: list
    best_val_nll: list  # standardised scale
    final_train_loss: float  # last training loss per row, averaged over the runs
    steps: int
    seconds: float
    history: dict = field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def keep_freed_memory():
    """Make glibc's ``malloc`` keep freed blocks of up to 32 MiB for reuse instead of returning
    them to the OS (``mallopt``; a no-op elsewhere than Linux/glibc). Otherwise every step of a
    full-batch run maps fresh pages for its activations and page-faults on them: measured
    on this 2-core CPU, an ERM step on power-plant (6,889 rows) took 12.8 ms before and 7.9 ms
    after. Returns whether the setting took effect."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def check_compile_support(device):
    """Raise :class:`RuntimeError` with what is missing when ``torch.compile`` cannot build
    kernels for ``device`` (``TrainConfig.compile``): a C++ compiler on CPU, Triton on CUDA.
    It compiles nothing.

    >>> check_compile_support("cpu")  # None where g++ is on PATH  # doctest: +SKIP
    >>> from unittest import mock
    >>> with mock.patch("torch.utils._triton.has_triton", return_value=False):  # CUDA without Triton
    ...     check_compile_support("cuda")
    Traceback (most recent call last):
    ...
    RuntimeError: --compile on CUDA needs Triton (pip install triton); or leave out --compile
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        from torch._inductor import cpp_builder, exc  # the check inductor itself runs

        try:
            cpp_builder.get_cpp_compiler()
        except exc.InvalidCxxCompiler:
            raise RuntimeError(
                "--compile on CPU needs a working C++ compiler (g++) on PATH; install one or leave out --compile"
            ) from None
    elif dev.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise RuntimeError("--compile on CUDA needs Triton (pip install triton); or leave out --compile")


def resolve_device(device):
    """``torch.device(device)``, with a clear error when CUDA is asked for and absent.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: CUDA is not available in this torch build / machine")
    return dev


def _tensor(a, device, task=None, labels=False):
    t = torch.as_tensor(a)
    if labels and task == "classification":
        return t.to(device=device, dtype=torch.long)
    return t.to(device=device, dtype=torch.float32)


def predict(net, method, task, x, seeds=None, samples=None):
    """Predictive of the ``R`` runs of ``net`` at inputs ``(R, M, ...)``, standardised scale;
    Monte Carlo predictives draw run ``r``'s embedding noise from a generator seeded with
    ``seeds[r]`` (default ``0, 1, ..., R - 1``).

    Regression: ``("gaussian", loc, scale)`` with ``(R, M)`` tensors, or ``("mixture", locs,
    scales)`` with ``(S, R, M)`` tensors for Monte Carlo prediction over the embedding.
    Classification: ``("probs", probs)`` with ``(R, M, C)`` (averaged over embedding draws).

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> star = resolve_method("M-ProbMix-star", mc_samples=3)
    >>> net = make_net(star, "mlp", [0, 1], (3,), 2, hidden=(8, 4))
    >>> kind, locs, scales = predict(net, star, "regression", torch.ones(2, 5, 3))
    >>> kind, locs.shape, bool((scales > 0).all())
    ('mixture', torch.Size([3, 2, 5]), True)
    >>> erm = resolve_method("ERM")
    >>> net = make_net(erm, "mlp", [0], (3,), 4, hidden=(8, 4))  # 4 classes
    >>> kind, probs = predict(net, erm, "classification", torch.ones(1, 5, 3))
    >>> kind, probs.shape, torch.allclose(probs.sum(-1), torch.ones(1, 5))
    ('probs', torch.Size([1, 5, 4]), True)
    """
    mode = method.prediction_mode()
    with torch.no_grad():
        if mode == "mean":
            out = forward(net, method, x, sites=False)[None]
        else:
            seeds = range(x.shape[0]) if seeds is None else seeds
            generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
            out = sample_outputs(net, x, method.mc_samples if samples is None else samples, generators)
    if task == "regression":
        d = likelihood(task, out)
        if mode == "mean":
            return ("gaussian", d.loc[0], d.scale[0])
        return ("mixture", d.loc, d.scale)
    return ("probs", torch.softmax(out, -1).mean(0))


def _val_nll(net, method, task, x, y, seeds, samples):
    """Per-run validation NLL ``(R,)`` (standardised scale); Monte Carlo predictives use
    ``samples`` draws, the same draws at every check (common random numbers)."""
    pred = predict(net, method, task, x, seeds, samples)
    if pred[0] == "gaussian":
        lp = torch.distributions.Normal(pred[1], pred[2]).log_prob(y)
    elif pred[0] == "mixture":
        lp = torch.distributions.Normal(pred[1], pred[2]).log_prob(y)
        lp = torch.logsumexp(lp, 0) - math.log(lp.shape[0])
    else:
        lp = torch.log(pred[1].gather(-1, y[..., None]).squeeze(-1).clamp_min(1e-300))
    return -lp.mean(-1)


def objective(method, task, net, x, y, graph=None, batch=None, streams=None):
    """``(loss, handler, trace)`` of one training step: ``-log p(y | x) / N`` of the Pyro model
    (inside ``probmix`` for every mixing method), the handler (``None`` for ERM and the controls), whose
    ``pairings["data"]`` holds the pairs and lambdas the step used, and the model's trace.

    :param x: ``(R, N, ...)`` tensor of inputs.
    :param y: ``(R, N)`` tensor of labels.
    :param graph: the method's sampling graph (default
        :func:`~pyro_probmix.experiments.blocks.make_graph` over ``streams``).
    :param batch: minibatch size (``None``: full batch).
    :param streams: the runs' :class:`~pyro_probmix.experiments.streams.RunStreams`, which draw
        every random number of the step (default: seeds ``0, ..., R - 1``).

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> pyro.clear_param_store()
    >>> method = resolve_method("M-Mix", alpha=0.5)
    >>> net = make_net(method, "mlp", [0], (3,), 2, hidden=(8, 4))
    >>> x, y = torch.randn(1, 6, 3), torch.randn(1, 6)
    >>> loss, handler, trace = objective(method, "regression", net, x, y)
    >>> loss.shape, loss.requires_grad, "z" in trace.nodes, handler.pairings["data"].lam.shape
    (torch.Size([]), True, True, torch.Size([6]))
    """
    model = make_model(net, method, task)
    runs, n = x.shape[:2]
    streams = RunStreams(range(runs), n, x.device) if streams is None else streams
    handler = None
    # argument checks of every distribution cost ~5% of a step; the data were checked once
    with pyro.validation_enabled(False):
        if not method.uses_handler:
            with streams:
                trace = poutine.trace(model).get_trace(x, y, batch)
        else:
            kwargs = method.handler_kwargs(task)
            kwargs["lam"] = RunBeta(kwargs.pop("alpha"), streams)
            if batch is not None:
                kwargs["plate"] = "data"
            handler = probmix(graph=graph if graph is not None else make_graph(method, x, streams), **kwargs)
            with handler, streams:  # streams inside: it draws the noise of the sites probmix pools
                trace = poutine.trace(model).get_trace(x, y, batch)
    return -trace.log_prob_sum() / n, handler, trace


def _snapshot(net):
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _update_best(best, net, improved, runs):
    """Copy the parameters of the improved runs into ``best``."""
    if not bool(improved.any()):
        return
    for name, value in net.state_dict().items():
        if name.startswith("encoder.runs."):
            r = int(name.split(".")[2])
            if improved[r]:
                best[name].copy_(value)
        else:  # leading run dimension
            mask = improved.to(value.device).reshape((runs,) + (1,) * (value.dim() - 1))
            best[name].copy_(torch.where(mask, value, best[name]))


def train_group(
    method,
    task,
    arch,
    x_train,
    y_train,
    x_val,
    y_val,
    seeds,
    config=TrainConfig(),
    hidden=(128, 32),
    noise_seeds=None,
    progress=None,
    checkpoint=None,
):
    """Train the ``R = len(seeds)`` runs of a group; returns a :class:`TrainResult` whose network
    holds each run's best-validation parameters.

    :param method: a resolved :class:`~pyro_probmix.experiments.methods.Method`.
    :param str task: ``"regression"`` or ``"classification"``.
    :param str arch: ``"mlp"``, ``"lstm"`` or ``"transformer"``.
    :param x_train: ``(R, N, ...)`` array or tensor (standardised).
    :param y_train: ``(R, N)``.
    :param x_val: ``(R, N_val, ...)``.
    :param y_val: ``(R, N_val)``.
    :param seeds: one initialisation seed per run.
    :param config: :class:`TrainConfig`.
    :param noise_seeds: one seed per run of its training noise (pairs, lambda, embedding draws,
        minibatches) and validation draws (default: ``seeds``).
    :param progress: optional callable ``progress(epoch_fraction)`` called after each epoch.
    :param checkpoint: optional :class:`~pyro_probmix.experiments.records.Checkpoint`: resume
        from it when it holds a state, save to it every few seconds.

    Two runs (seeds 0 and 1) of LocKProbMix, trained together for two epochs; run 1 trained alone
    ends with the same parameters, bit for bit:

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(2, 8, 3, generator=g), torch.randn(2, 8, generator=g)
    >>> method = resolve_method("LocKProbMix", k=2)
    >>> result = train_group(method, "regression", "mlp", x, y, x[:, :4], y[:, :4],
    ...                      seeds=[0, 1], config=TrainConfig(epochs=2), hidden=(8, 4))
    >>> result.net.runs, result.steps, len(result.best_epoch)
    (2, 2, 2)
    >>> alone = train_group(method, "regression", "mlp", x[1:], y[1:], x[1:, :4], y[1:, :4],
    ...                     seeds=[1], config=TrainConfig(epochs=2), hidden=(8, 4))
    >>> torch.equal(alone.net.head.weight[0], result.net.head.weight[1])
    True
    """
    device = resolve_device(config.device)
    x_train = _tensor(x_train, device)
    y_train = _tensor(y_train, device, task, labels=True)
    x_val = _tensor(x_val, device)
    y_val = _tensor(y_val, device, task, labels=True)
    runs, n = x_train.shape[:2]
    noise_seeds = list(seeds if noise_seeds is None else noise_seeds)
    if not runs == len(seeds) == len(noise_seeds):
        raise ValueError(f"{runs} runs of data but {len(seeds)} seeds and {len(noise_seeds)} noise seeds")
    batch = config.batch_size
    if batch is not None and batch >= n:
        batch = None
    if batch is not None and runs != 1:
        raise ValueError("minibatch training (batch_size) trains one run per group")
    out_dim = 2 if task == "regression" else int(max(y_train.max(), y_val.max()).item()) + 1
    if task == "classification":
        out_dim = max(out_dim, 2)
    net = make_net(method, arch, seeds, x_train.shape[2:], out_dim, hidden, compile_pool=config.compile).to(device)
    streams = RunStreams([derive_seed(s, "train") for s in noise_seeds], n, device)
    val_seeds = [derive_seed(s, "validation") for s in noise_seeds]
    graph = make_graph(method, x_train, streams) if method.uses_handler else None
    pyro.clear_param_store()
    # only minibatches (one run per group) are drawn from torch's default generator
    pyro.set_rng_seed(derive_seed(noise_seeds[0], "minibatches") % 2**32 if runs == 1 else 0)
    optim = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=method.weight_decay)
    steps_per_epoch = 1 if batch is None else math.ceil(n / batch)
    torch.set_flush_denormal(True)  # denormal floats slow CPU training down ~20x
    keep_freed_memory()

    def loss_fn():
        return objective(method, task, net, x_train, y_train, graph, batch, streams)[0]

    best = _snapshot(net)
    net.eval()
    best_val = _val_nll(net, method, task, x_val, y_val, val_seeds, config.val_samples)
    best_val = torch.where(torch.isnan(best_val), torch.full_like(best_val, math.inf), best_val)
    best_epoch = torch.zeros(runs, dtype=torch.long)
    state = {"epoch": 0, "steps": 0, "seconds": 0.0, "last_loss": math.nan}
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        net.load_state_dict(saved["net"])
        optim.load_state_dict(saved["optim"])
        best, best_val, best_epoch = saved["best"], saved["best_val"], saved["best_epoch"]
        for g, g_state in zip(streams.generators, saved["generators"]):
            g.set_state(g_state)
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
        if progress is not None:
            progress(state["epoch"] / config.epochs)
    start = time.perf_counter() - state["seconds"]
    try:
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            net.train()
            for _ in range(steps_per_epoch):
                before = torch.get_rng_state() if state["steps"] == 0 and runs > 1 else None
                loss = loss_fn()
                if before is not None and not torch.equal(before, torch.get_rng_state()):
                    raise RuntimeError(f"{method.name}: a draw of a group's step used torch's default generator "
                                       "instead of the runs' streams, so runs would depend on their group")
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                state["steps"] += 1
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                net.eval()
                val = _val_nll(net, method, task, x_val, y_val, val_seeds, config.val_samples)
                improved = (val < best_val.to(val.device)).cpu()
                _update_best(best, net, improved, runs)
                best_val = torch.where(improved, val.cpu(), best_val.cpu())
                best_epoch = torch.where(improved, torch.full_like(best_epoch, epoch), best_epoch)
            state["epoch"] = epoch
            if progress is not None:
                progress(1.0 / config.epochs)
            if checkpoint is not None and epoch < config.epochs and checkpoint.due():
                state["seconds"] = time.perf_counter() - start
                checkpoint.save({
                    "net": net.state_dict(), "optim": optim.state_dict(), "best": best, "best_val": best_val,
                    "best_epoch": best_epoch, "generators": [g.get_state() for g in streams.generators],
                    "torch_rng": torch.get_rng_state(), "state": state,
                })
        state["last_loss"] = float(loss.detach()) / runs
    finally:
        torch.set_flush_denormal(False)
    seconds = time.perf_counter() - start
    net.load_state_dict(best)
    net.eval()
    return TrainResult(net, best_epoch.tolist(), best_val.tolist(), state["last_loss"], state["steps"], seconds)
