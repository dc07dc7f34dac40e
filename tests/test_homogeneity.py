"""The homogeneity of consecutive blocks' features and gate logits (dia_ode/analysis/homogeneity.py) and the
per-sample cosine it uses (dia_ode/analysis/correlation.py::layer_cosine), on hand-made traces whose answer is
known in closed form, and the gate logits against the SE excitation read by a forward hook."""

import json
import math

import pytest
import torch

import dia_ode
from dia_ode.analysis import (block_similarity, gate_logits, homogeneity_with_untrained, layer_correlation,
                              layer_cosine, pooled_states, pooled_updates, stage_homogeneity)
from dia_ode.analysis.homogeneity import LABELS, MEASURES
from dia_ode.attention.se import SqueezeExcite
from dia_ode.solvers.trace import StageTrace, stages_of

N, C, H, W = 5, 6, 3, 4


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def with_zero_mean_pattern(g, seed):
    """(N, C) -> (N, C, H, W) feature maps whose global average pool is exactly g: a pattern of mean 0 per
    sample and channel added to g."""
    p = torch.randn(g.shape[0], g.shape[1], H, W, generator=gen(seed), dtype=torch.float64)
    return g[:, :, None, None] + (p - p.mean(dim=(2, 3), keepdim=True))


def hand_made_trace(pooled_f, pooled_x, z):
    """A StageTrace with L blocks whose GAP(f_k) is pooled_f[:, k], GAP(x_{k+1}) pooled_x[:, k] and whose SE
    gate is sigmoid(z[:, k]); all (N, L, C)."""
    t = StageTrace()
    length = pooled_f.shape[1]
    states = [with_zero_mean_pattern(torch.zeros(N, C, dtype=torch.float64), 99)] + \
        [with_zero_mean_pattern(pooled_x[:, k], 10 + k) for k in range(length)]
    for k in range(length):
        t.record(states[k], with_zero_mean_pattern(pooled_f[:, k], k), torch.sigmoid(z[:, k])[:, :, None, None])
    t.finish(states[-1])
    return t


def test_layer_cosine_by_hand():
    e0, e1 = torch.eye(3)[0], torch.eye(3)[1]
    v = torch.stack([torch.stack([e0, e0 + e1, -e0]),  # sample 0: cos(e0, e0 + e1) = 1/sqrt(2)
                     torch.stack([e0, e1, -e0])])  # sample 1: cos(e0, e1) = 0
    expected = torch.tensor([[1, 0.5 / math.sqrt(2), -1],
                             [0.5 / math.sqrt(2), 1, -0.5 / math.sqrt(2)],
                             [-1, -0.5 / math.sqrt(2), 1]], dtype=torch.float64)
    torch.testing.assert_close(layer_cosine(v), expected, rtol=0, atol=1e-12)
    # an offset shared by the blocks raises the cosine and leaves Pearson's r alone
    u = torch.randn(N, 2, C, generator=gen(1), dtype=torch.float64)
    assert layer_cosine(u + 10)[0, 1] > 0.95 > abs(float(layer_correlation(u, "per_sample")[0, 1]))
    torch.testing.assert_close(layer_correlation(u + 10, "per_sample"), layer_correlation(u, "per_sample"))
    with pytest.raises(ValueError, match=r"\(N, L, C\)"):
        layer_cosine(torch.ones(3, 4))


def test_a_zero_vector_has_no_cosine_and_its_sample_is_left_out():
    v = torch.rand(4, 3, C, generator=gen(2), dtype=torch.float64)
    v[0, 1] = 0.0
    with pytest.warns(RuntimeWarning, match="1 of 4 samples have a zero"):
        r = layer_cosine(v)
    by_hand = torch.nn.functional.cosine_similarity(v[1:, 0], v[1:, 1], dim=-1).mean()
    assert float(r[0, 1]) == pytest.approx(float(by_hand), abs=1e-12)
    v[:, 2] = 0.0
    with pytest.warns(RuntimeWarning):
        assert layer_cosine(v)[2].isnan().all()


def test_pooled_features_are_the_global_averages_of_updates_and_block_outputs():
    g = torch.randn(N, 3, C, generator=gen(3), dtype=torch.float64)
    x = torch.randn(N, 3, C, generator=gen(4), dtype=torch.float64)
    t = hand_made_trace(g, x, torch.zeros(N, 3, C))
    torch.testing.assert_close(pooled_updates(t), g, rtol=0, atol=1e-12)
    torch.testing.assert_close(pooled_states(t), x, rtol=0, atol=1e-12)  # x_1 .. x_L, not the input x_0
    tokens = StageTrace()  # (N, T, C): pooled over the tokens
    for k in range(2):
        tokens.record(torch.zeros(N, 7, C), torch.full((N, 7, C), float(k)), torch.ones(N, 1, C))
    assert torch.equal(pooled_updates(tokens), torch.tensor([0.0, 1.0])[None, :, None].expand(N, 2, C))


def test_each_measure_has_its_closed_form_answer():
    g0 = torch.rand(N, C, generator=gen(5), dtype=torch.float64) + 0.5  # positive, varies over channels
    # GAP(f): block 1 = 2 * block 0 + 3 (Pearson 1, cosine below 1), block 2 = -block 1 (both -1)
    g = torch.stack([g0, 2 * g0 + 3, -(2 * g0 + 3)], dim=1)
    # GAP(x): block 1 = 5 * block 0 (both 1), block 2 independent of block 1
    x0 = torch.randn(N, C, generator=gen(6), dtype=torch.float64)
    x = torch.stack([x0, 5 * x0, torch.randn(N, C, generator=gen(7), dtype=torch.float64)], dim=1)
    # gate logits: block 1 = 2 * block 0 + 1, block 2 = -block 1: r = 1 and -1, which the gates do not show
    z0 = torch.randn(N, C, generator=gen(8), dtype=torch.float64)
    z = torch.stack([z0, 2 * z0 + 1, -(2 * z0 + 1)], dim=1)
    t = hand_made_trace(g, x, z)
    cosine_01 = torch.nn.functional.cosine_similarity(g0, 2 * g0 + 3, dim=-1).mean()
    assert float(cosine_01) < 0.999
    expected = {"update_pearson": (1.0, -1.0), "update_cosine": (float(cosine_01), -1.0),
                "state_pearson": (1.0, None), "state_cosine": (1.0, None), "logit_pearson": (1.0, -1.0)}
    for measure, (r01, r12) in expected.items():
        r = block_similarity(t, measure)
        assert float(r[0, 1]) == pytest.approx(r01, abs=1e-9), measure
        if r12 is not None:
            assert float(r[1, 2]) == pytest.approx(r12, abs=1e-9), measure
    gates = layer_correlation(torch.sigmoid(z), "per_sample")
    assert float(gates[0, 1]) < 0.999  # the sigmoid bends a linear relation of the logits
    out = stage_homogeneity(t)
    assert out["logit_pearson"]["mean_r_consecutive"] == pytest.approx(0.0, abs=1e-9)  # (1 + (-1)) / 2
    assert out["update_pearson"]["mean_r"] == pytest.approx((1 - 1 - 1) / 3, abs=1e-9)  # pairs 01, 12, 02
    with pytest.raises(ValueError, match="update_pearson, update_cosine"):
        block_similarity(t, "gate_cosine")


def test_gate_logits_invert_the_sigmoid_and_a_saturated_gate_is_left_out():
    z = torch.linspace(-8, 8, N * 2 * C).reshape(N, 2, C)
    t = hand_made_trace(torch.rand(N, 2, C), torch.rand(N, 2, C), z)
    logits = gate_logits(t)
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits, z.double(), rtol=0, atol=2e-3)  # float32 gates: 1 - h rounds near h = 1
    torch.testing.assert_close(logits[z.abs() < 4], z[z.abs() < 4].double(), rtol=0, atol=2e-5)
    t.steps[1] = t.steps[1].clone()
    t.steps[1][0, 0] = 1.0  # a gate rounded to 1: an infinite logit
    assert gate_logits(t)[0, 1, 0] == math.inf
    with pytest.warns(RuntimeWarning, match="1 of 5 samples"):
        r = block_similarity(t, "logit_pearson")
    assert math.isfinite(float(r[0, 1]))


def test_gate_logits_equal_the_se_excitation_read_by_a_forward_hook():
    model = dia_ode.create_model("se_resnet20", in_channels=1, num_classes=10, base_width=4, reduction=4,
                                 min_hidden=4).eval()
    seen, hooks = [], []
    for stage in stages_of(model):  # each SE's excitation, in the order its stage calls the blocks
        seen.append([])
        for se in (m for m in stage.controller.modules() if isinstance(m, SqueezeExcite)):
            hooks.append(se.excite.register_forward_hook(lambda mod, args, out, mine=seen[-1]: mine.append(out)))
    with torch.no_grad():
        traces = dia_ode.trace(model, torch.randn(6, 1, 8, 8, generator=gen(9)))
    for h in hooks:
        h.remove()
    assert len(traces) == len(seen) == 3
    for t, logits in zip(traces, seen):
        torch.testing.assert_close(gate_logits(t), torch.stack(logits, dim=1).double(), rtol=0, atol=1e-4)


def test_homogeneity_with_untrained_is_plain_json_per_stage():
    model = dia_ode.create_model("se_resnet20", in_channels=1, num_classes=10, base_width=4).eval()
    with torch.no_grad():
        traces = dia_ode.trace(model, torch.randn(6, 1, 8, 8, generator=gen(10)))
    out = homogeneity_with_untrained(traces, traces)
    assert len(out) == 3 and set(out[0]) == set(MEASURES) == set(LABELS)
    json.dumps(out)
    for s, entry in enumerate(out):
        for measure, values in entry.items():
            assert values["untrained"] == {k: values[k] for k in ("mean_r", "mean_r_consecutive")}
            r = block_similarity(traces[s], measure)
            assert values["mean_r_consecutive"] == pytest.approx(float((r[0, 1] + r[1, 2]) / 2), abs=1e-12)
    with pytest.raises(ValueError, match="3 trained stages but 2"):
        homogeneity_with_untrained(traces, traces[:2])
