"""The correlation protocols on hand-made attentions with a known answer, their null references, the planted
positive control, and `dia-ode correlate --protocol` on a tiny trained run (theory/correlation.md)."""

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from dia_ode.analysis import (PROTOCOLS, attention_vectors, layer_correlation, learning_measures, mean_off_diagonal,
                              permute_channels, permuted_correlation, planted_correlation, planted_gates,
                              protocol_correlation, untrained_model)
from dia_ode.cli import main
from dia_ode.engine import TrainConfig, Trainer
from dia_ode.rundir import load_run
from dia_ode.solvers import trace

N, L, C = 200, 3, 64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def off_diagonal(r):
    return r[~torch.eye(r.shape[0], dtype=torch.bool)]


# ---------------------------------------------------------------- hand-made arrays, every protocol

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identical_blocks_correlate_exactly_one(protocol):
    v = torch.rand(N, 1, C, generator=gen())  # differs between samples and channels, the same in every block
    r = layer_correlation(v.expand(N, L, C), protocol)
    assert torch.equal(r, torch.ones(L, L, dtype=torch.float64))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_anticorrelated_blocks_correlate_minus_one(protocol):
    v = torch.rand(N, 1, C, generator=gen(1))
    a = torch.cat((v, 1 - v, v), dim=1)  # gates in (0, 1): block 1 opens where blocks 0 and 2 close
    expected = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(layer_correlation(a, protocol), expected, rtol=0, atol=1e-12)


def test_a_shared_profile_with_independent_noise_is_high_uncentred_and_zero_centred():
    # a[n, l, c] = p[c] + sigma * e[n, l, c]: every block shows the same channel profile p to every
    # input, and nothing else is shared. Within a sample, r = var(p) / (var(p) + sigma^2) = 1 / 1.04.
    p = torch.randn(C, generator=gen(2))
    p = (p - p.mean()) / p.std(correction=0)  # var(p) = 1 exactly over the channels
    a = p + 0.2 * torch.randn(N, L, C, generator=gen(3))
    assert mean_off_diagonal(layer_correlation(a, "per_sample")) == pytest.approx(1 / 1.04, abs=0.02)
    assert mean_off_diagonal(layer_correlation(a, "batch_mean")) > 0.99  # the noise averages out over N
    # the noise is all that varies over the images, and it is independent between blocks
    for protocol in ("per_channel", "centred"):
        assert off_diagonal(layer_correlation(a, protocol)).abs().max() < 0.05, protocol


def test_input_driven_agreement_under_different_block_profiles_is_seen_only_across_samples():
    # The converse: each block has its own large fixed profile p_l (independent between blocks), and
    # on top the same input-dependent part u[n, c] in every block. Per sample the profiles dominate
    # (r near 0); over the samples only u varies, and it is shared (r = 1 up to rounding).
    profiles = 10 * torch.randn(1, L, C, generator=gen(4))
    a = profiles + torch.randn(N, 1, C, generator=gen(5))
    for protocol in ("per_sample", "batch_mean"):
        assert off_diagonal(layer_correlation(a, protocol)).abs().max() < 0.35, protocol
    for protocol in ("per_channel", "centred"):
        torch.testing.assert_close(off_diagonal(layer_correlation(a, protocol)),
                                   torch.ones(L * L - L, dtype=torch.float64), rtol=0, atol=1e-9)


def test_per_channel_is_the_mean_over_channels_of_the_correlation_across_samples():
    a = torch.rand(7, 3, 5, generator=gen(6), dtype=torch.float64)
    by_hand = torch.stack([torch.corrcoef(a[:, :, c].T) for c in range(5)]).mean(dim=0)
    torch.testing.assert_close(layer_correlation(a, "per_channel"), by_hand, rtol=0, atol=1e-12)
    centred = a - a.mean(dim=0)
    torch.testing.assert_close(layer_correlation(a, "centred"), layer_correlation(centred, "per_sample"),
                               rtol=0, atol=1e-12)


def test_protocol_correlation_names_its_protocol_and_its_units():
    a = torch.rand(6, 3, 4, generator=gen(7))
    for protocol in PROTOCOLS:
        out = protocol_correlation(a, protocol)
        assert out["protocol"] == protocol
        assert out["mean_r"] == mean_off_diagonal(layer_correlation(a, protocol))
        units = "channels" if protocol == "per_channel" else "samples"
        assert out[f"{units}_used"] == [[4 if units == "channels" else 6] * 3] * 3


def test_unknown_protocol_raises_naming_the_valid_ones():
    with pytest.raises(ValueError, match="per_channel, centred"):
        layer_correlation(torch.rand(2, 3, 4), "pooled")


def test_a_gate_that_ignores_the_input_is_undefined_per_channel_and_centred():
    a = torch.rand(10, 3, 4, generator=gen(8))
    a[:, 1] = torch.rand(4, generator=gen(9))  # block 1: the same gates for every image
    with pytest.warns(RuntimeWarning, match="4 of 4 channels"):
        r = layer_correlation(a, "per_channel")
    assert r[1].isnan().all() and not r[0, 2].isnan()
    with pytest.warns(RuntimeWarning, match="10 of 10 samples"):
        assert layer_correlation(a, "centred")[0, 1].isnan()
    assert not layer_correlation(a, "per_sample").isnan().any()  # its profile still varies over channels
    measures = learning_measures(a, a)
    assert measures["input_independent_blocks"] == [1] and measures["spread_per_block"][1] == 0.0


# ---------------------------------------------------------------- null references, learning measures

def test_permuting_channels_keeps_each_block_and_destroys_the_alignment():
    v = torch.rand(N, 1, C, generator=gen(10))
    a = v.expand(N, L, C).clone()  # identical blocks: r = 1 under every protocol
    b = permute_channels(a, gen(11))
    # every block keeps its values, per sample and per channel: one permutation per block
    assert torch.equal(b.sort(dim=-1).values, a.sort(dim=-1).values)
    assert torch.equal(b.sort(dim=0).values.sort(dim=-1).values, a.sort(dim=0).values.sort(dim=-1).values)
    for protocol in PROTOCOLS:
        null = permuted_correlation(a, protocol, draws=4, seed=1)
        assert abs(null["mean_r"]) < 0.1 and null["draws"] == 4, protocol
        assert null == permuted_correlation(a, protocol, draws=4, seed=1)  # seeded


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.85])
def test_planted_gates_come_out_at_their_planted_r(rho):
    n, length, c = 400, 4, 64
    a = planted_gates(n, length, c, rho, gen(13))
    # the construction, read without any protocol: over every sample and channel, consecutive blocks
    # correlate at rho and blocks two apart at rho^2 (AR(1) over depth); the gates sit around 0.5
    flat = a.permute(1, 0, 2).reshape(length, -1)  # (L, N * C)
    pooled = torch.corrcoef(flat)
    assert pooled.diagonal(1).tolist() == pytest.approx([rho] * (length - 1), abs=0.03)
    assert pooled.diagonal(2).tolist() == pytest.approx([rho**2] * (length - 2), abs=0.03)
    assert float(a.mean()) == pytest.approx(0.5, abs=0.01) and float(a.std()) == pytest.approx(0.1, abs=0.005)
    # the claim's protocol recovers rho within its sampling error (planted_correlation's docstring: 4 scatters of
    # the mean over samples and pairs, plus the bias of an r over C channels)
    scatter = (1 - rho**2) / math.sqrt((c - 1) * n * (length - 1))
    bias = rho * (1 - rho**2) / (2 * c)
    r = mean_off_diagonal(layer_correlation(a, "per_sample"), offset=1)
    assert abs(r - (rho - bias)) <= 4 * scatter + 1e-3
    assert planted_correlation(rho, "per_sample", (n, length, c), seed=13) == pytest.approx(r, abs=1e-12)


def test_planted_correlation_tells_a_planted_r_from_its_neighbours_and_rejects_a_bad_rho():
    measured = {rho: planted_correlation(rho, "per_sample") for rho in (0.75, 0.85, 0.95)}  # default shape
    assert measured[0.75] < measured[0.85] - 0.05 and measured[0.85] < measured[0.95] - 0.05
    with pytest.raises(ValueError, match="rho must lie in"):
        planted_gates(2, 2, 2, 1.5, gen())


def test_learning_measures_by_hand():
    a0 = torch.rand(5, 3, 4, generator=gen(12))
    out = learning_measures(a0 + 0.1, a0)
    assert out["moved"] == pytest.approx(0.1)
    assert out["spread"] == pytest.approx(out["spread_untrained"])
    assert out["spread"] == pytest.approx(float(a0.double().std(dim=0, correction=0).mean()))
    assert out["mean_gate"] == pytest.approx(out["mean_gate_untrained"] + 0.1)
    with pytest.raises(ValueError, match="differ in shape"):
        learning_measures(a0, a0[:, :2])


def test_untrained_model_is_the_trainers_initial_model(tmp_path):
    cfg = TrainConfig(model="se_resnet20", seed=3, device="cpu", model_options={"base_width": 4})
    trainer = Trainer(cfg, tmp_path)  # builds the model it would train; trains nothing
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    model = untrained_model(trainer.spec, 3)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random state is left alone
    theirs = trainer.model.state_dict()
    assert set(model.state_dict()) == set(theirs)
    assert all(torch.equal(value, theirs[key]) for key, value in model.state_dict().items())
    other = untrained_model(trainer.spec, 4).state_dict()
    assert not all(torch.equal(value, theirs[key]) for key, value in other.items())


# ---------------------------------------------------------------- the command

def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    for model in ("se_resnet20", "resnet20"):
        result = invoke("train", "--model", model, "--epochs", 1, "--model-option", "base_width=4",
                        "--no-progress", "--out", out)
        assert result.exit_code == 0, result.output
    return {d.name.split("-")[2]: d for d in out.iterdir()}


def _output_dir(out):
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    return run_dir


def test_correlate_reports_every_protocol_with_its_nulls(runs, tmp_path):
    result = invoke("correlate", runs["se_resnet20"], "--samples", 32, "--permutations", 2, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out = _output_dir(tmp_path)
    stages = json.loads((out / "correlation.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocols"] == list(PROTOCOLS) and len(stages) == 3
    for s in stages:
        assert set(s["learning"]) >= {"spread", "spread_untrained", "moved", "mean_gate", "input_independent_blocks"}
        for protocol in PROTOCOLS:
            entry = s[protocol]
            assert entry["protocol"] == protocol and len(entry["matrix"]) == 3
            assert set(entry["untrained"]) >= {"matrix", "mean_r", "mean_r_consecutive"}
            assert set(entry["permuted"]) >= {"mean_r", "mean_r_std", "draws"} and entry["permuted"]["draws"] == 2
            assert f"stage {s['stage']}, {protocol}: r = " in result.output
            assert summary["mean_r_untrained"][protocol][s["stage"]] == entry["untrained"]["mean_r"]
        assert summary["moved"][s["stage"]] == s["learning"]["moved"] > 0  # one epoch moves the gates
    for name in [*(f"correlation_{p}" for p in PROTOCOLS), "correlation_nulls"]:
        assert (out / "figures" / f"{name}.png").is_file(), name
    assert "(untrained " in result.output and "permuted " in result.output and "from untrained" in result.output

    # the untrained reference recomputed from scratch: the seed's initial network on the same images
    run = load_run(runs["se_resnet20"])
    x, _ = run.test_batch(32)
    with torch.no_grad():
        a0 = attention_vectors(trace(untrained_model(run.model_spec, run.config["seed"]), x)[2])
    assert stages[2]["per_sample"]["untrained"]["mean_r"] == pytest.approx(
        mean_off_diagonal(layer_correlation(a0, "per_sample")), abs=1e-12)


def test_correlate_one_protocol(runs, tmp_path):
    result = invoke("correlate", runs["se_resnet20"], "--samples", 16, "--protocol", "centred",
                    "--permutations", 1, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    out = _output_dir(tmp_path)
    stages = json.loads((out / "correlation.json").read_text())
    assert all(set(PROTOCOLS) & set(s) == {"centred"} for s in stages)
    assert "per_sample" not in result.output and "stage 0, centred: r = " in result.output
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == ["correlation_centred.png",
                                                                      "correlation_nulls.png"]


@pytest.mark.parametrize("args, words", [
    (("--protocol", "pooled"), "--protocol"),
    (("--permutations", 0), "--permutations"),
])
def test_correlate_bad_options_are_one_line_usage_errors(runs, tmp_path, args, words):
    result = invoke("correlate", runs["se_resnet20"], *args, "--out", tmp_path)
    assert result.exit_code == 2 and words in result.output.splitlines()[-1]
    assert not any(tmp_path.iterdir())


def test_correlate_without_attention_or_seed_is_a_usage_error(runs, tmp_path):
    result = invoke("correlate", runs["resnet20"], "--out", tmp_path / "out")
    assert result.exit_code == 2 and "has no attention" in result.output.splitlines()[-1]
    copy = tmp_path / "no-seed"
    shutil.copytree(runs["se_resnet20"], copy)
    config = json.loads((copy / "config.json").read_text())
    del config["seed"]
    (copy / "config.json").write_text(json.dumps(config))
    result = invoke("correlate", copy, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "config.json has no integer 'seed'" in result.output.splitlines()[-1]
    assert not (tmp_path / "out").exists()  # no run directory, nor an empty --out
