"""What a cross-block attention correlation is worth: its null references and how much the attention learned.

A mean r says nothing on its own: the SE gates of a small network trained on digits barely
move from their initial values, and their correlations equal those of the untrained network. So
every correlation is reported next to
- the same measure on the untrained network of the same seed (untrained_model): what the
  architecture and the initialisation give before any learning;
- the same measure on the trained attentions with each block's channel order permuted
  (permute_channels): what any per-block distribution gives once the blocks' channels are no
  longer aligned;
and next to how much the attention learned (learning_measures): its spread over the images (does it
depend on the input at all?) and its distance from the untrained gates. The positive control goes the
other way: gates correlated by construction (planted_gates) must come out at their planted r
(planted_correlation), or the instrument could not see the effect it looks for. Formulas and readings
are in theory/correlation.md.
"""

from __future__ import annotations

import math
import random
import warnings
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
from torch import nn

from dia_ode.analysis.correlation import PROTOCOLS, attention_vectors, layer_correlation, mean_off_diagonal, \
    protocol_correlation
from dia_ode.engine import build_model, seed_everything
from dia_ode.solvers.trace import StageTrace


@contextmanager
def _global_rng_kept():
    """Run a block that reseeds Python, NumPy and torch, then put their states back: a library call
    must not change what the caller's next random draw is."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def untrained_model(spec: dict, seed: int, device: torch.device | str = "cpu") -> nn.Module:
    """The network a training run started from, in eval mode.

    The trainer seeds everything with the run's seed and then builds the model from its spec
    (engine/trainer.py: seed_everything, build_model), so doing the same gives exactly the initial
    weights (tests/test_correlation_protocols.py::test_untrained_model_is_the_trainers_initial_model).
    The caller's random states are left as they were.

    Args:
        spec: the run's model_spec {"name", "options"} (LoadedRun.model_spec).
        seed: the run's seed (config.json "seed").
        device: where to put the model.
    """
    with _global_rng_kept():
        seed_everything(seed)
        return build_model(spec, device).eval()


def permute_channels(a: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each block's channels in a random order of its own, the same order for every sample.

    Keeps every block's distribution of gates (per sample and per channel) and destroys the
    alignment of channel c across blocks, which is all a cross-block correlation can measure.

    Args:
        a: attentions (N, L, C).
        generator: the source of the permutations.

    Returns:
        (N, L, C): a[n, l, perm_l[c]].
    """
    n, length, c = a.shape
    perms = torch.stack([torch.randperm(c, generator=generator) for _ in range(length)]).to(a.device)  # (L, C)
    return torch.gather(a, 2, perms[None].expand(n, length, c))


def permuted_correlation(a: torch.Tensor, protocol: str, draws: int = 8, seed: int = 0) -> dict:
    """The channel-permuted null of one protocol: its mean r over `draws` permutations.

    Returns:
        {"mean_r", "mean_r_consecutive": means over the draws, "mean_r_std": the std of mean_r over
        the draws (how much one draw varies), "draws", "seed"}.
    """
    generator = torch.Generator().manual_seed(seed)
    means, consecutive = [], []
    with warnings.catch_warnings():  # permuting keeps every constant vector: the trained call warned already
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(draws):
            r = layer_correlation(permute_channels(a, generator), protocol)
            means.append(mean_off_diagonal(r))
            consecutive.append(mean_off_diagonal(r, offset=1))
    return {"mean_r": _finite(np.mean, means), "mean_r_consecutive": _finite(np.mean, consecutive),
            "mean_r_std": _finite(np.std, means), "draws": draws, "seed": seed}


def _finite(fn, values: list[float]) -> float:
    """fn over the finite values, NaN when there is none (no warning about an empty slice)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else math.nan


def learning_measures(a: torch.Tensor, a_untrained: torch.Tensor) -> dict:
    """How much a stage's attention learned, from its gates on the same images before and after training.

    Args:
        a: trained attentions (N, L, C).
        a_untrained: the untrained network's attentions on the same N images, (N, L, C).

    Returns:
        {"mean_gate", "mean_gate_untrained": the mean gate; "spread", "spread_untrained": the std
        over the N images of each block's and channel's gate (population std), averaged over blocks
        and channels (0 when the attention ignores its input); "spread_per_block": the trained
        spread of each block, (L,) list; "moved": mean |a - a_untrained| over images, blocks and
        channels; "input_independent_blocks", "input_independent_blocks_untrained": the blocks whose
        every gate is the same for all N images (e.g. an SE bottleneck whose ReLU units are all
        dead): "per_channel" and "centred" are undefined for their pairs}.
    """
    if a.shape != a_untrained.shape:
        raise ValueError(f"trained attentions {tuple(a.shape)} and untrained {tuple(a_untrained.shape)} differ in shape")
    a, a0 = a.to(torch.float64), a_untrained.to(torch.float64)
    return {"mean_gate": float(a.mean()), "mean_gate_untrained": float(a0.mean()),
            "spread": float(a.std(dim=0, correction=0).mean()),
            "spread_untrained": float(a0.std(dim=0, correction=0).mean()),
            "spread_per_block": a.std(dim=0, correction=0).mean(dim=-1).tolist(),
            "moved": float((a - a0).abs().mean()),
            "input_independent_blocks": _input_independent(a),
            "input_independent_blocks_untrained": _input_independent(a0)}


def _input_independent(a: torch.Tensor) -> list[int]:
    """The blocks k of a (N, L, C) whose gates a[:, k, c] are equal for every image, for every c."""
    return torch.nonzero((a.amax(dim=0) == a.amin(dim=0)).all(dim=-1)).flatten().tolist()


def correlation_with_nulls(traces: Sequence[StageTrace], untrained_traces: Sequence[StageTrace],
                           protocols: Sequence[str] = PROTOCOLS, draws: int = 8, seed: int = 0) -> list[dict]:
    """Every protocol's correlation per stage, each with its two null references, and the learning measures.

    Args:
        traces: the trained model's traces (dia_ode.solvers.trace) on N images.
        untrained_traces: the untrained model's traces (untrained_model) on the same images.
        protocols: which of PROTOCOLS to compute.
        draws: permutations averaged in the permuted null.
        seed: seeds the permutations (stage s uses seed * 1_000_003 + s, one stream per stage,
            the same for every protocol, so protocols are compared on the same permutations).

    Returns:
        One dict per stage, plain data for JSON::

            {"stage", "num_samples", "num_blocks", "channels", "learning": learning_measures(...),
             "<protocol>": {**protocol_correlation(a, protocol),
                            "untrained": protocol_correlation(a_untrained, protocol),
                            "permuted": permuted_correlation(a, protocol, draws, ...)}, ...}

    Raises:
        ValueError: a stage without attention (constant steps), or traces of different models.
    """
    if len(traces) != len(untrained_traces):
        raise ValueError(f"{len(traces)} trained stages but {len(untrained_traces)} untrained ones")
    result = []
    for s, (t, t0) in enumerate(zip(traces, untrained_traces)):
        a, a0 = attention_vectors(t), attention_vectors(t0)  # (N, L, C) each
        entry = {"stage": s, "num_samples": a.shape[0], "num_blocks": a.shape[1], "channels": a.shape[2],
                 "learning": learning_measures(a, a0)}
        for protocol in protocols:
            entry[protocol] = {**protocol_correlation(a, protocol),
                               "untrained": protocol_correlation(a0, protocol),
                               "permuted": permuted_correlation(a, protocol, draws, seed * 1_000_003 + s)}
        result.append(entry)
    return result


def planted_gates(samples: int, blocks: int, channels: int, rho: float, generator: torch.Generator) -> torch.Tensor:
    """Gates whose consecutive blocks correlate at Pearson rho by construction: a positive control.

    Per sample the blocks' vectors are a Gaussian AR(1) chain over depth, z_0 ~ N(0, I) and
    z_{k+1} = rho z_k + sqrt(1 - rho^2) e_k with fresh e_k ~ N(0, I), so every z_k is N(0, I) and every
    channel of z_k and z_{k+1} has correlation rho (blocks two apart rho^2). The gates are
    a = 0.5 + 0.1 z: values around sigmoid(0) like an SE gate, and an affine map leaves every Pearson r
    as it is.

    Args:
        samples, blocks, channels: the shape (N, L, C).
        rho: the planted correlation of consecutive blocks, in [-1, 1].
        generator: the source of the draws.

    Returns:
        a (N, L, C) float64.
    """
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [-1, 1], got {rho}")
    e = torch.randn(samples, blocks, channels, generator=generator, dtype=torch.float64)  # (N, L, C)
    z = [e[:, 0]]
    for k in range(1, blocks):
        z.append(rho * z[-1] + math.sqrt(1.0 - rho * rho) * e[:, k])  # (N, C)
    return 0.5 + 0.1 * torch.stack(z, dim=1)  # (N, L, C)


def planted_correlation(rho: float, protocol: str, shape: tuple[int, int, int] = (256, 3, 16), seed: int = 0) -> float:
    """What `protocol` measures between consecutive blocks of planted_gates(*shape, rho): it should be rho.

    For "per_sample" each sample's r over C channels scatters by about (1 - rho^2) / sqrt(C - 1) around
    rho and is biased towards 0 by about rho (1 - rho^2) / (2 C); the mean over N samples and L - 1
    pairs scatters by about (1 - rho^2) / sqrt((C - 1) N (L - 1)).

    Args:
        rho: the planted r.
        protocol: one of PROTOCOLS.
        shape: (N, L, C) of the planted gates.
        seed: seeds the draws.

    Returns:
        The protocol's mean r over the consecutive pairs (protocol_correlation's "mean_r_consecutive").
    """
    a = planted_gates(*shape, rho, torch.Generator().manual_seed(seed))
    return protocol_correlation(a, protocol)["mean_r_consecutive"]


__all__ = ["correlation_with_nulls", "learning_measures", "permute_channels", "permuted_correlation",
           "planted_correlation", "planted_gates", "untrained_model"]
