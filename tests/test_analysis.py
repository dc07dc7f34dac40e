import json
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import dia_ode
from dia_ode.analysis import (attention_vectors, layer_correlation, mean_off_diagonal, per_channel_rank_correlation,
                              plot_correlation_heatmaps, plot_depth_profiles, plot_eigenvalues, plot_indices_over_time,
                              rank_correlation, stage_correlations, step_sizes)
from dia_ode.attention import DIALSTMCell
from dia_ode.attention.dia_cell import zero_

MODES = ("per_sample", "batch_mean")


def traced(name, n=6):
    model = dia_ode.create_model(name, in_channels=1, num_classes=10, base_width=4).eval()
    return model, dia_ode.trace(model, torch.randn(n, 1, 8, 8))


# ---------------------------------------------------------------- layer_correlation

@pytest.mark.parametrize("mode", MODES)
def test_identical_layers_correlate_exactly_one(mode):
    v = torch.rand(5, 1, 300)  # a different vector per sample, the same in every block
    r = layer_correlation(v.expand(5, 4, 300), mode=mode)
    assert r.dtype == torch.float64 and r.shape == (4, 4)
    assert torch.equal(r, torch.ones(4, 4, dtype=torch.float64))


@pytest.mark.parametrize("mode", MODES)
def test_diagonal_is_exactly_one_and_matrix_symmetric(mode):
    r = layer_correlation(torch.rand(7, 5, 33), mode=mode)
    assert torch.equal(r.diagonal(), torch.ones(5, dtype=torch.float64))
    assert torch.equal(r, r.T)


@pytest.mark.parametrize("mode", MODES)
def test_independent_layers_are_uncorrelated(mode):
    # batch_mean correlates one mean C-vector per block: |r| ~ 1/sqrt(C) = 0.016, so 0.1 is 6 sigma.
    r = layer_correlation(torch.rand(8, 4, 4096), mode=mode)
    off = r[~torch.eye(4, dtype=torch.bool)]
    assert off.abs().max() < 0.1


@pytest.mark.parametrize("mode", MODES)
def test_negated_layers_correlate_minus_one(mode):
    v = torch.randn(6, 1, 50)
    a = torch.cat((v, -v, v), dim=1)  # (N, 3, C)
    expected = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=torch.float64)
    assert torch.equal(layer_correlation(a, mode=mode), expected)


def test_matches_numpy_corrcoef_in_both_modes():
    a = torch.randn(3, 4, 6)
    by_hand = np.mean([np.corrcoef(a[n].double().numpy()) for n in range(3)], axis=0)
    np.testing.assert_allclose(layer_correlation(a, "per_sample").numpy(), by_hand, rtol=0, atol=1e-12)
    by_hand = np.corrcoef(a.double().mean(dim=0).numpy())
    np.testing.assert_allclose(layer_correlation(a, "batch_mean").numpy(), by_hand, rtol=0, atol=1e-12)


def test_batch_mean_differs_from_per_sample_where_it_should():
    # Within a sample both blocks share a large term e_n (r near +1); e_n cancels over the batch
    # (samples come in +e, -e pairs), leaving block means w and -w (r = -1).
    w, e = torch.randn(32), 10 * torch.randn(8, 32)
    e = torch.cat((e, -e))  # (16, C), sums to zero exactly
    a = torch.stack((w + e, -w + e), dim=1)  # (16, 2, C)
    assert layer_correlation(a, "per_sample")[0, 1] > 0.9
    assert layer_correlation(a, "batch_mean")[0, 1] == -1.0


def test_wrong_shape_or_mode_raise():
    with pytest.raises(ValueError, match=r"\(N, L, C\)"):
        layer_correlation(torch.rand(3, 4))
    with pytest.raises(ValueError, match="per_sample"):
        layer_correlation(torch.rand(2, 3, 4), mode="mean")


# ---------------------------------------------------------------- zero variance

def test_a_constant_vector_drops_its_sample_from_the_pairs_with_that_block():
    a = torch.rand(5, 3, 8)
    a[1, 2] = 0.3  # block 2 of sample 1 is constant
    with pytest.warns(RuntimeWarning, match="1 of 5 samples"):
        r, counts = layer_correlation(a, return_counts=True)
    assert counts.tolist() == [[5, 5, 4], [5, 5, 4], [4, 4, 4]]
    keep = [0, 2, 3, 4]
    np.testing.assert_allclose(r[0, 2], np.mean([np.corrcoef(a[n].double().numpy())[0, 2] for n in keep]), atol=1e-12)
    np.testing.assert_allclose(r[0, 1], layer_correlation(a[:, :2])[0, 1], atol=1e-12)  # other pairs keep all
    assert r[2, 2] == 1.0


def test_constant_everywhere_gives_nan_not_a_division_by_zero():
    a = torch.rand(4, 3, 1)  # C = 1: every vector is constant
    with pytest.warns(RuntimeWarning, match="4 of 4 samples"):
        r, counts = layer_correlation(a, return_counts=True)
    assert r.isnan().all() and (counts == 0).all()
    b = torch.rand(4, 3, 6)
    b[:, 1] = 0.5  # block 1 constant in every sample, so its batch mean is constant too
    r, counts = layer_correlation(b, "batch_mean", return_counts=True)
    assert r[1].isnan().all() and r[:, 1].isnan().all() and (counts[1] == 0).all()
    assert not r[[0, 2]][:, [0, 2]].isnan().any() and counts[0, 2] == 4


def test_mean_off_diagonal_is_nan_aware():
    r = np.array([[1.0, 0.2, np.nan], [0.2, 1.0, 0.6], [np.nan, 0.6, 1.0]])
    assert mean_off_diagonal(r) == pytest.approx(0.4)
    assert mean_off_diagonal(torch.tensor(r), offset=1) == pytest.approx(0.4)
    assert mean_off_diagonal(np.array([[1.0, 0.5, -0.5], [0.5, 1.0, 0.5], [-0.5, 0.5, 1.0]]), offset=2) == -0.5
    assert math.isnan(mean_off_diagonal(np.ones((1, 1))))
    assert math.isnan(mean_off_diagonal(np.full((2, 2), np.nan)))


# ---------------------------------------------------------------- traces

@pytest.mark.parametrize("name", ["se_resnet20", "cbam_resnet20", "dia_resnet20"])
def test_attention_vectors_of_a_trace(name):
    _, traces = traced(name, n=5)
    for t, channels in zip(traces, (4, 8, 16)):
        a = attention_vectors(t)
        assert a.shape == (5, 3, channels)
        assert ((a > 0) & (a < 1)).all()
        torch.testing.assert_close(a[:, 1], t.steps[1].expand_as(t.updates[1]).mean(dim=(2, 3)))


def test_attention_vectors_of_a_plain_resnet_raise():
    _, traces = traced("resnet20")
    with pytest.raises(ValueError, match="has no attention: constant step"):
        attention_vectors(traces[0])


def test_stage_correlations_is_plain_json_and_matches_layer_correlation():
    _, traces = traced("se_resnet20")
    result = stage_correlations(traces)
    assert json.loads(json.dumps(result)) == result
    assert [s["stage"] for s in result] == [0, 1, 2]
    for s, t in zip(result, traces):
        assert (s["num_samples"], s["num_blocks"], s["channels"]) == tuple(attention_vectors(t).shape)
        for mode in MODES:
            r = layer_correlation(attention_vectors(t), mode)
            np.testing.assert_array_equal(np.asarray(s[mode]["matrix"]), r.numpy())
            assert s[mode]["mean_r"] == mean_off_diagonal(r)
            assert s[mode]["mean_r_consecutive"] == mean_off_diagonal(r, offset=1)
            assert s[mode]["samples_used"] == [[6] * 3] * 3


def test_step_sizes_of_a_plain_resnet_are_one():
    _, traces = traced("resnet20")
    for t, channels in zip(traces, (4, 8, 16)):
        steps = step_sizes(t)
        assert steps["constant"] and steps["num_samples"] == 6
        np.testing.assert_array_equal(steps["block_mean"], np.ones(3))
        np.testing.assert_array_equal(steps["channel_mean"], np.ones((3, channels)))
        np.testing.assert_array_equal(steps["channel_std"], np.zeros((3, channels)))


def test_step_sizes_of_a_zeroed_dia_cell_are_a_quarter():
    model = dia_ode.create_model("dia_resnet20", in_channels=1, num_classes=10, base_width=4).eval()
    cells = [m for m in model.modules() if isinstance(m, DIALSTMCell)]
    assert len(cells) == 3
    for cell in cells:
        zero_(cell)
    for t in dia_ode.trace(model, torch.randn(4, 1, 8, 8)):
        steps = step_sizes(t)
        assert not steps["constant"]
        assert (steps["block_mean"] == 0.25).all() and (steps["channel_mean"] == 0.25).all()
        assert (steps["block_std"] == 0).all()


def test_step_sizes_average_samples_and_channels():
    _, traces = traced("se_resnet20")
    h = torch.stack([s[:, :, 0, 0] for s in traces[1].steps], dim=1).double()  # (N, L, C)
    steps = step_sizes(traces[1])
    np.testing.assert_allclose(steps["channel_mean"], h.mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(steps["block_mean"], h.mean((0, 2)).numpy(), atol=1e-12)
    np.testing.assert_allclose(steps["block_std"], h.mean(2).std(0, correction=0).numpy(), atol=1e-12)


# ---------------------------------------------------------------- rank correlation

def test_rank_correlation_of_monotone_pairs():
    h = np.array([0.1, 0.3, 0.2, 0.9, 0.5])
    assert rank_correlation(h, h ** 3 + 7)["rho"] == pytest.approx(1.0)
    out = rank_correlation(h, np.exp(-h))
    assert out["rho"] == pytest.approx(-1.0) and out["n"] == 5 and out["reason"] is None


def test_rank_correlation_ignores_nan_pairs_and_needs_four():
    h = np.array([0.1, np.nan, 0.2, 0.4, 0.3, 0.5])
    s = np.array([1.0, 5.0, 2.0, np.inf, 3.0, 4.0])
    out = rank_correlation(h, s)
    assert out["n"] == 4 and out["rho"] == pytest.approx(1.0)
    out = rank_correlation(h[:4], s[:4])
    assert out["n"] == 2 and math.isnan(out["rho"]) and out["reason"] == "only 2 valid pairs, need >= 4"
    out = rank_correlation(np.ones(4), np.arange(4.0))
    assert math.isnan(out["rho"]) and "constant" in out["reason"]
    with pytest.raises(ValueError):
        rank_correlation(np.ones(3), np.ones(4))


def test_per_channel_rank_correlation():
    h = np.random.default_rng(0).random((6, 5))
    s = h.copy()
    s[:, 1] = -h[:, 1]  # channel 1 anti-correlated
    s[:, 2] = np.nan  # channel 2 undefined
    out = per_channel_rank_correlation(h, s)
    assert out["rho"].shape == out["pvalue"].shape == out["n"].shape == (5,)
    assert math.isnan(out["rho"][2]) and out["num_valid"] == 4
    np.testing.assert_allclose(out["rho"][[0, 1, 3, 4]], [1.0, -1.0, 1.0, 1.0])
    assert out["mean"] == pytest.approx(0.5) and out["median"] == pytest.approx(1.0)
    assert (out["fraction_positive"], out["fraction_negative"]) == (0.75, 0.25)
    shared = per_channel_rank_correlation(h, np.arange(6.0))  # one stiffness per block, for every channel
    np.testing.assert_allclose(shared["rho"], [rank_correlation(h[:, c], np.arange(6.0))["rho"] for c in range(5)])


# ---------------------------------------------------------------- plots

def test_correlation_heatmaps():
    matrices = [layer_correlation(torch.rand(4, L, 8)).numpy() for L in (3, 3, 12)]
    fig = plot_correlation_heatmaps(matrices, ["a", "b", "c"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # three stages and the colour bar
    assert [len(ax.images) for ax in fig.axes[:3]] == [1, 1, 1]
    assert all(ax.images[0].get_clim() == (-1.0, 1.0) for ax in fig.axes[:3])
    assert f"{mean_off_diagonal(matrices[0]):.2f}" in fig.axes[0].get_title()
    plt.close(fig)
    with pytest.raises(ValueError):
        plot_correlation_heatmaps(matrices, ["a"])


def test_depth_profiles():
    fig = plot_depth_profiles([np.ones(3), np.arange(4.0)], [np.arange(3.0), None], ["s0", "s1"],
                              step_std=[np.zeros(3), np.ones(4)], log_stiffness=True)
    assert len(fig.axes) == 4  # per stage a panel of steps above a panel of the stiffness estimate
    assert [len(ax.containers) for ax in fig.axes] == [1, 1, 1, 0]  # the stage without an estimate says so
    assert fig.axes[2].get_yscale() == "log"
    plt.close(fig)


def test_eigenvalues():
    eigs = [np.array([-0.5 + 0.2j, -1.5, 0.3j]), np.array([-2.5, np.nan])]
    fig = plot_eigenvalues(eigs, ["block 0", "block 1"])
    (ax,) = fig.axes
    assert len(ax.lines) == 2 and len(ax.patches) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]  # the legend sits below the axes
    assert "block 0 (2/3 inside)" in labels and "block 1 (0/1 inside)" in labels
    plt.close(fig)
    fig = plot_eigenvalues([np.array([-400.0, -0.5])], step=0.1)  # z = -40 is far: a close-up beside it
    ax, near = fig.axes
    assert len(ax.lines) == len(near.lines) == 1
    assert ax.get_xlim()[0] <= -40 and ax.get_xlim()[1] >= 0 and near.get_xlim()[0] > -5
    plt.close(fig)


def test_indices_over_time():
    t = np.linspace(0, 1, 20)
    fig = plot_indices_over_time(t, {"spectral radius": np.exp(3 * t), "local": np.sin(7 * t)}, title="Robertson")
    assert len(fig.axes) == 2 and [len(ax.lines) for ax in fig.axes] == [1, 1]
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]
    plt.close(fig)


def test_depth_advice_names_the_shallowest_model_whose_stages_gain_the_missing_pairs():
    from dia_ode.analysis import with_depth_advice

    def pairs(*n):
        return [{"rho": math.nan, "n": k, "reason": "too few"} for k in n]

    # the quotient: 3 blocks give 2 pairs, 1 where the first block changes shape; 4 needed -> 5 and 6 blocks
    advised = with_depth_advice("dia_resnet20", [3, 3, 3], pairs(2, 1, 1))
    assert [a["instead"] for a in advised] == ["train a deeper model, e.g. dia_resnet44 (7 blocks per stage)"] * 3
    assert advised[0]["reason"] == "too few"  # the reason is kept
    # the spectral radius pairs every block: 3 and 2 pairs -> 4 and 5 blocks
    assert with_depth_advice("dia_resnet20", [3, 3, 3], pairs(3, 2, 2))[0]["instead"].endswith(
        "dia_resnet32 (5 blocks per stage)")
    plain = with_depth_advice("resnet20", [3, 3, 3], pairs(2, 1, 1))[0]["instead"]
    assert "with attention" in plain and "dia_resnet44" in plain  # a plain model's constant steps rank nothing
    assert [a["instead"] for a in with_depth_advice("dia_resnet56", [9, 9, 9], pairs(8, 7, 7))] == [None] * 3
    assert "no registered model" in with_depth_advice("dia_resnet164", [18] * 3, pairs(1, 1, 1))[0]["instead"]
