# SPDX-License-Identifier: Apache-2.0
"""
Networks and the Pyro model of the experiments.

Every network holds ``R`` independent copies ("runs": splits or seeds of one configuration) so
that one optimisation step trains them all: linear layers are batched matrix products over a
leading run dimension (:class:`RunLinear`), recurrent and attention encoders are one module per
run. Inputs and outputs carry the run dimension first: ``(R, N, ...)``. Run ``r`` is initialised
from its own seed only, so its initial weights do not depend on which runs share its group.

A network is split at the mixing layer, the first hidden layer (§5):

* ``encode(x) -> f``: the feature extractor before the mixing layer (identity for the MLP; the
  flattened LSTM / Transformer outputs for the stock models).
* ``embed(f) -> h``: the mixing layer, ``relu(W f + b)`` for the MLP (width 128, 64 for the star
  variants) and the linear compression to ``d_z = 64`` for the stock models.
* ``embed_scale(x, f) -> sigma``: the embedding scale of M-ProbMix, ``softplus(V f + c)``, a head
  sharing the encoder; for the star variants a separate network ``x -> 64 -> d_z`` of the raw input.
* ``decode(z) -> out``: the rest: ``Linear(128, 32)-ReLU-Linear(32, out)`` for the UCI MLP,
  ``ReLU-Linear(64, out)`` for the stock models.

The output is ``(loc, softplus(raw) + 1e-3)`` of a Gaussian (regression) or class logits.
"""
import math

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyro_probmix import embedding
from pyro_probmix.pooling import register_pool

from .compiled_pool import CompiledPoolNormal

__all__ = [
    "RunLinear", "Net", "HomoscedasticNormal", "CompiledPoolNormal", "make_net", "forward", "sample_outputs", "make_model",
    "likelihood", "MIN_SCALE",
]

#: lower bound of predictive and embedding scales (in standardised units)
MIN_SCALE = 1e-3


class HomoscedasticNormal(dist.Normal):
    """A :class:`~pyro.distributions.Normal` whose scale is the same constant for every row: the
    embedding of Mix and M-Mix (Theorems 4.5-4.7). Its log-linear pool with another one of the same
    scale is the special case of the Gaussian rule (Appendix C.1) with equal precisions,
    ``Normal(lam loc_p + (1 - lam) loc_q, scale)``, registered with the library's public
    :func:`~pyro_probmix.pooling.register_pool`: the same result as the general rule at a quarter of
    its cost (no logarithms and exponentials of the whole layer).

    >>> from pyro_probmix.pooling import log_linear_pool
    >>> p = HomoscedasticNormal(torch.tensor([0.0, 2.0]), 1.0)
    >>> q = HomoscedasticNormal(torch.tensor([4.0, 2.0]), 1.0)
    >>> pooled = log_linear_pool(p, q, 0.25)
    >>> type(pooled).__name__, pooled.loc.tolist(), pooled.scale.tolist()
    ('HomoscedasticNormal', [3.0, 2.0], [1.0, 1.0])
    """


@register_pool(HomoscedasticNormal, HomoscedasticNormal)
def _pool_homoscedastic(p, q, lam):
    loc = torch.lerp(q.loc, p.loc, lam) if torch.is_tensor(lam) else lam * p.loc + (1 - lam) * q.loc
    return HomoscedasticNormal(loc, p.scale)


def _generators(seeds):
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


class RunLinear(nn.Module):
    """``R`` independent affine maps ``x[r] @ W[r] + b[r]``, initialised like :class:`torch.nn.Linear`
    (uniform in ``±1/sqrt(d_in)``) from each run's generator.

    >>> layer = RunLinear([torch.Generator().manual_seed(s) for s in (0, 1)], 3, 4)
    >>> layer.weight.shape, layer(torch.ones(2, 5, 3)).shape
    (torch.Size([2, 3, 4]), torch.Size([2, 5, 4]))
    >>> alone = RunLinear([torch.Generator().manual_seed(1)], 3, 4)  # run 1 on its own
    >>> torch.equal(alone.weight[0], layer.weight[1])
    True
    """

    def __init__(self, gens, d_in, d_out):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)
        w = torch.stack([torch.empty(d_in, d_out).uniform_(-bound, bound, generator=g) for g in gens])
        b = torch.stack([torch.empty(1, d_out).uniform_(-bound, bound, generator=g) for g in gens])
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b)

    def forward(self, x):
        shape = x.shape
        out = torch.baddbmm(self.bias, x.reshape(shape[0], -1, shape[-1]), self.weight)
        return out.reshape(shape[:-1] + (out.shape[-1],))


def _reset(module, gen):
    """Re-initialise a torch module's parameters (torch's default schemes) from ``gen``."""
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.LSTM):
                bound = 1.0 / math.sqrt(sub.hidden_size)
                for p in sub.parameters(recurse=False):
                    p.uniform_(-bound, bound, generator=gen)
            elif isinstance(sub, nn.Linear):
                bound = 1.0 / math.sqrt(sub.weight.shape[1])
                sub.weight.uniform_(-bound, bound, generator=gen)
                if sub.bias is not None:
                    sub.bias.uniform_(-bound, bound, generator=gen)
            elif isinstance(sub, nn.LayerNorm):
                sub.weight.fill_(1.0)
                sub.bias.zero_()
        for sub in module.modules():  # after the Linear pass: out_proj is a Linear
            if isinstance(sub, nn.MultiheadAttention):
                w = sub.in_proj_weight
                bound = math.sqrt(6.0 / (w.shape[0] // 3 + w.shape[1]))  # xavier_uniform
                w.uniform_(-bound, bound, generator=gen)
                sub.in_proj_bias.zero_()
                sub.out_proj.bias.zero_()


class _LSTMEncoder(nn.Module):
    def __init__(self, d_in, hidden=64, layers=2):
        super().__init__()
        self.lstm = nn.LSTM(d_in, hidden, num_layers=layers, batch_first=True)

    def forward(self, x):  # (N, T, d) -> (N, T * hidden)
        out, _ = self.lstm(x)
        return out.flatten(1)


class _TransformerEncoder(nn.Module):
    def __init__(self, d_in, length, d_model=64, heads=2, layers=2, gen=None):
        super().__init__()
        self.proj = nn.Linear(d_in, d_model)
        self.position = nn.Parameter(0.02 * torch.randn(length, d_model, generator=gen))
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x):  # (N, T, d) -> (N, T * d_model)
        return self.encoder(self.proj(x) + self.position).flatten(1)


class _PerRun(nn.Module):
    """One module per run, applied to its slice of ``(R, N, ...)``."""

    def __init__(self, modules):
        super().__init__()
        self.runs = nn.ModuleList(modules)

    def forward(self, x):
        return torch.stack([m(x[r]) for r, m in enumerate(self.runs)])


class Net(nn.Module):
    """``R`` copies of one architecture, split at the mixing layer (see the module docstring).

    :param str arch: ``"mlp"``, ``"lstm"`` or ``"transformer"``.
    :param seeds: one initialisation seed per run.
    :param tuple in_shape: shape of one input row (``(d,)``, or ``(T, d)`` for sequences).
    :param int out_dim: 2 (Gaussian loc and raw scale) or the number of classes.
    :param hidden: MLP widths ``(mixing layer, rest...)``, e.g. ``(128, 32)``.
    :param str scale_head: ``None``, ``"shared"`` (head on the encoder features) or ``"separate"``.
    :param bool halve: halve the mixing layer's width (star variants).
    :param int d_z: width of the mixing layer of the stock models (the compression of the encoder
        features).
    :param bool compile_pool: pool the Gaussian embedding with :class:`CompiledPoolNormal`.

    >>> net = Net("mlp", seeds=[0, 1], in_shape=(3,), out_dim=2, hidden=(8, 4))
    >>> x = torch.ones(2, 5, 3)  # (R, N, d)
    >>> h = net.embed(net.encode(x))
    >>> h.shape, net.decode(h).shape
    (torch.Size([2, 5, 8]), torch.Size([2, 5, 2]))
    >>> star = Net("mlp", [0], (3,), 2, hidden=(8, 4), scale_head="separate", halve=True)
    >>> star.width, bool((star.embed_scale(x[:1], x[:1]) >= MIN_SCALE).all())
    (4, True)
    """

    def __init__(
        self, arch, seeds, in_shape, out_dim, hidden=(128, 32), scale_head=None, halve=False, d_z=64, compile_pool=False
    ):
        super().__init__()
        self.embedding_normal = CompiledPoolNormal if compile_pool else dist.Normal
        gens = _generators(seeds)
        self.arch, self.runs, self.in_shape = arch, len(gens), tuple(in_shape)
        if arch == "mlp":
            (d_in,) = self.in_shape
            self.encoder = None
            width = hidden[0] // 2 if halve else hidden[0]
            self.feature_dim = d_in
            self.mixing = RunLinear(gens, d_in, width)
            self.mixing_activation = True
            dims = (width,) + tuple(hidden[1:])
            self.decoder = nn.ModuleList(RunLinear(gens, a, b) for a, b in zip(dims[:-1], dims[1:]))
            self.head = RunLinear(gens, dims[-1], out_dim)
        elif arch in ("lstm", "transformer"):
            length, d_in = self.in_shape
            encoders = []
            for g in gens:
                enc = _LSTMEncoder(d_in) if arch == "lstm" else _TransformerEncoder(d_in, length, gen=g)
                _reset(enc, g)
                encoders.append(enc)
            self.encoder = _PerRun(encoders)
            width = d_z // 2 if halve else d_z
            self.feature_dim = length * 64
            self.mixing = RunLinear(gens, self.feature_dim, width)
            self.mixing_activation = False
            self.decoder = nn.ModuleList()
            self.head = RunLinear(gens, width, out_dim)
        else:
            raise ValueError(f"unknown architecture {arch!r}; expected 'mlp', 'lstm' or 'transformer'")
        self.width = width
        self.scale_head = scale_head
        if scale_head == "shared":
            self.scale_layer = RunLinear(gens, self.feature_dim, width)
        elif scale_head == "separate":
            d_raw = math.prod(self.in_shape)
            self.scale_net = nn.ModuleList([RunLinear(gens, d_raw, 64), RunLinear(gens, 64, width)])
        elif scale_head is not None:
            raise ValueError(f"scale_head must be None, 'shared' or 'separate', got {scale_head!r}")

    def encode(self, x):
        """The features ``f`` before the mixing layer (the input itself for the MLP)."""
        if self.encoder is None:
            return x
        return self.encoder(x)

    def embed(self, f):
        """The mixing layer ``h`` of features ``f``."""
        h = self.mixing(f)
        return F.relu(h) if self.mixing_activation else h

    def embed_scale(self, x, f):
        """The embedding scale ``sigma`` of M-ProbMix (at least :data:`MIN_SCALE`), from the
        features ``f`` (shared head) or the raw input ``x`` (separate network)."""
        if self.scale_head == "shared":
            raw = self.scale_layer(f)
        elif self.scale_head == "separate":
            raw = self.scale_net[1](F.relu(self.scale_net[0](x.flatten(2))))
        else:
            raise RuntimeError("this network has no embedding scale head")
        return F.softplus(raw) + MIN_SCALE

    def decode(self, z):
        """The network's output from the (pooled) embedding ``z``."""
        if self.encoder is not None:
            z = F.relu(z)
        for layer in self.decoder:
            z = F.relu(layer(z))
        return self.head(z)


def make_net(method, arch, seeds, in_shape, out_dim, hidden=(128, 32), compile_pool=False):
    """The network of ``method``: a scale head for M-ProbMix, a separate scale network and a
    halved mixing layer for the star variants; ``compile_pool`` as in :class:`Net`.

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> net = make_net(resolve_method("M-ProbMix"), "mlp", [0, 1], (3,), 2, hidden=(8, 4))
    >>> net.runs, net.scale_head, net.width
    (2, 'shared', 8)
    >>> star = make_net(resolve_method("M-ProbMix-star"), "mlp", [0], (3,), 2, hidden=(8, 4))
    >>> star.scale_head, star.width
    ('separate', 4)
    """
    spec = method.spec
    scale_head = None
    if spec.embedding == "gaussian":
        scale_head = "separate" if spec.separate_variance else "shared"
    return Net(
        arch, seeds, in_shape, out_dim, hidden,
        scale_head=scale_head, halve=spec.separate_variance, compile_pool=compile_pool,
    )


def likelihood(task, out):
    """The observation distribution of network outputs ``out`` of shape ``(rows, out_dim)``.

    >>> d = likelihood("regression", torch.zeros(4, 2))  # scale softplus(0) + MIN_SCALE
    >>> type(d).__name__, d.loc.shape, round(float(d.scale[0]), 4)
    ('Normal', torch.Size([4]), 0.6941)
    >>> likelihood("classification", torch.zeros(4, 3)).probs[0]
    tensor([0.3333, 0.3333, 0.3333])
    """
    if task == "regression":
        return dist.Normal(out[..., 0], F.softplus(out[..., 1]) + MIN_SCALE)
    return dist.Categorical(logits=out)


def _flat(t):
    return t.reshape((t.shape[0] * t.shape[1],) + t.shape[2:])


def forward(net, method, x, *, sites=True):
    """Network outputs ``(R, N, out_dim)`` for inputs ``(R, N, ...)``.

    With ``sites=True`` (inside the Pyro model) the mixing layer of ``method`` is an
    :func:`~pyro_probmix.embedding` site named ``"x"`` (input mixup) or ``"z"`` (manifold
    variants), which :func:`~pyro_probmix.probmix` fuses (the controls M-ERM and M-ERM-star have
    the Gaussian site ``"z"`` and no handler: ``z ~ q(z|x)`` is drawn); the model must have opened the data plate
    over the ``R * N`` flattened rows. With ``sites=False`` (prediction) the embedding is its mean;
    :func:`sample_outputs` draws it instead.

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> method = resolve_method("M-ProbMix")
    >>> net = make_net(method, "mlp", [0, 1], (3,), 2, hidden=(8, 4))
    >>> x = torch.ones(2, 5, 3)
    >>> forward(net, method, x, sites=False).shape
    torch.Size([2, 5, 2])
    >>> trace = pyro.poutine.trace(forward).get_trace(net, method, x)  # the embedding site
    >>> trace.nodes["z"]["value"].shape
    torch.Size([10, 8])
    """
    spec = method.spec
    if spec.mixing == "input" and sites:
        flat = _flat(x)
        fn = HomoscedasticNormal(flat, torch.ones((), dtype=x.dtype, device=x.device)).to_event(flat.dim() - 1)
        x = embedding("x", fn, mean=True).reshape(x.shape)
    f = net.encode(x)
    h = net.embed(f)
    z = h
    if spec.embedding == "gaussian" and sites:  # M-ProbMix fuses it, M-ERM draws it alone
        fn = net.embedding_normal(_flat(h), _flat(net.embed_scale(x, f))).to_event(1)
        z = embedding("z", fn, mean=False).reshape(h.shape)
    elif spec.mixing == "hidden" and sites:
        fn = HomoscedasticNormal(_flat(h), torch.ones((), dtype=h.dtype, device=h.device)).to_event(1)
        z = embedding("z", fn, mean=True).reshape(h.shape)
    return net.decode(z)


def sample_outputs(net, x, samples, generators):
    """Network outputs ``(S, R, N, out_dim)`` for ``S = samples`` draws of the Gaussian embedding
    ``z ~ Normal(h(x), sigma(x))`` of M-ProbMix (prediction, no Pyro sites). The encoder, mixing
    layer and scale run once; the draws go through the decoder together. Run ``r``'s noise comes
    from the CPU generator ``generators[r]`` whatever the device, so draws are the same on CPU and
    GPU and do not depend on the other runs of the group.

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> net = make_net(resolve_method("M-ProbMix-star"), "mlp", [0, 1], (3,), 2, hidden=(8, 4))
    >>> x = torch.ones(2, 5, 3)
    >>> out = sample_outputs(net, x, 4, [torch.Generator().manual_seed(s) for s in (0, 1)])
    >>> out.shape, bool(out[0].ne(out[1]).any())  # draws differ
    (torch.Size([4, 2, 5, 2]), True)
    """
    f = net.encode(x)
    h = net.embed(f)
    noise = torch.stack([torch.randn((samples,) + h.shape[1:], generator=g) for g in generators], 1)
    noise = noise.to(h.device, h.dtype)
    z = h + net.embed_scale(x, f) * noise  # (S, R, N, width)
    S, R, N = z.shape[:3]
    out = net.decode(z.transpose(0, 1).reshape(R, S * N, -1))  # the decoder wants runs first
    return out.reshape(R, S, N, -1).transpose(0, 1)


def make_model(net, method, task):
    """The Pyro model: ``pyro.module``, the data plate over the ``R * N`` rows of the group (or a
    subsample of the rows of one run), the method's embedding site, and the observed site ``"y"``.

    ``model(x, y, subsample_size=None)`` with ``x`` of shape ``(R, N, ...)`` and ``y`` ``(R, N)``.

    >>> from pyro_probmix.experiments.methods import resolve_method
    >>> pyro.clear_param_store()
    >>> method = resolve_method("ERM")
    >>> model = make_model(make_net(method, "mlp", [0, 1], (3,), 2, hidden=(8, 4)), method, "regression")
    >>> trace = pyro.poutine.trace(model).get_trace(torch.ones(2, 5, 3), torch.zeros(2, 5))
    >>> trace.nodes["y"]["value"].shape, trace.nodes["data"]["value"].shape
    (torch.Size([10]), torch.Size([10]))
    """

    def model(x, y=None, subsample_size=None):
        pyro.module("net", net)
        R, N = x.shape[:2]
        if subsample_size is None:
            with pyro.plate("data", R * N):
                out = forward(net, method, x)
                return pyro.sample("y", likelihood(task, _flat(out)), obs=None if y is None else _flat(y))
        if R != 1:
            raise ValueError("minibatches (subsample_size) train one run at a time (R = 1)")
        with pyro.plate("data", N, subsample_size=subsample_size) as idx:
            out = forward(net, method, x[:, idx])
            return pyro.sample("y", likelihood(task, _flat(out)), obs=None if y is None else y[0, idx])

    return model
