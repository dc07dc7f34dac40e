"""Tests for the model registry (metadata filters, attention as an option, options checked before
building, the old short names), the backbone interface, the attention table as controllers and
dynamics, and the images/tokens Layout that lets one attention module serve CNNs and Transformers.
"""

import dataclasses
import functools
import inspect
import itertools
import re

import pytest
import torch

from dia_ode.attention import (ATTENTIONS, CBAM, IMAGES, SAMS, TOKENS, CBAMChannelGate, DIAUnit,
                               EfficientChannelAttention, Layout, SqueezeExcite)
from dia_ode.attention.registry import SCOPES
from dia_ode.models import AbstractBackbone, FeatureInfo, create_model, list_models, model_entry
from dia_ode.models import registry
from dia_ode.models.odenet import ConvField
from dia_ode.solvers import (ConstantStep, DIADynamics, DIAStageController, GatedDynamics, LearnedScalarStep,
                             PerBlockAttention, PlainDynamics, SharedAttention, create_stage_controller, make_dynamics)

DEPTHS = (20, 32, 44, 56, 110, 164)  # the names that must stay stable
ADDED_DEPTHS = (29,)  # resnet29 / preresnet29: bottlenecks at resnet164's widths, CPU-sized
PREFIXES = ("", "se_", "eca_", "cbam_", "shared_", "dia_")
OLD_NAMES = [f"{a}{f}{d}" for a, f, d in itertools.product(PREFIXES, ("resnet", "preresnet"), DEPTHS)]


# --------------------------------------------------------------------------------------------------
# list_models


def test_kind_continuous_is_exactly_the_odenets():
    assert list_models(kind="continuous") == ["dia_odenet", "odenet", "se_odenet"]
    discrete = set(list_models(kind="discrete"))
    assert discrete.isdisjoint(list_models(kind="continuous"))
    assert discrete | set(list_models(kind="continuous")) == set(list_models())
    assert {"rknet", "dia_untiednet", "dia_resnet20"} <= discrete


def test_family_filter():
    resnets = list_models(family="resnet")
    assert len(resnets) == len(DEPTHS + ADDED_DEPTHS) * len(PREFIXES) == 42
    assert all(re.fullmatch(r"((se|eca|cbam|shared|dia)_)?resnet\d+", n) for n in resnets)
    added = {f"{a}resnet{d}" for a in PREFIXES for d in ADDED_DEPTHS}
    assert set(resnets) == {n for n in OLD_NAMES if "preresnet" not in n} | added
    assert set(list_models(family="preresnet")) == {n for n in OLD_NAMES if "preresnet" in n} | \
        {f"{a}preresnet{d}" for a in PREFIXES for d in ADDED_DEPTHS}
    assert list_models(family="odenet", attention="none") == ["odenet", "rknet", "untiednet"]
    with pytest.raises(ValueError, match="no model has family 'no_such_family'; valid: odenet, preresnet"):
        list_models(family="no_such_family")  # a typo is an error, not an empty list
    with pytest.raises(ValueError, match="no model has attention 'nope'"):
        list_models(attention="nope")


def test_attention_filter():
    dia = list_models(attention="dia")
    assert dia and all(n.startswith("dia_") for n in dia)
    assert dia == [n for n in list_models() if n.startswith("dia_")]
    assert {"dia_resnet20", "dia_preresnet164", "dia_odenet", "dia_rknet"} <= set(dia)
    plain = list_models(attention="none")
    assert "resnet20" in plain and not any(n.split("_")[0] in ATTENTIONS for n in plain)
    assert list_models("*odenet", attention="eca") == []  # the ODE models take none, se and dia only


def test_task_filter_and_combined_filters():
    classifiers = list_models(task="classification")
    assert "resnet20" in classifiers and "dia_odenet" in classifiers
    with pytest.raises(ValueError, match="no model has task .no_such_task.; valid: classification"):
        list_models(task="no_such_task")
    assert list_models("*20", family="preresnet", attention="se") == ["se_preresnet20"]
    assert list_models("dia_*resnet56", kind="discrete", task="classification") == ["dia_preresnet56", "dia_resnet56"]


def test_unknown_filter_key_raises():
    with pytest.raises(ValueError, match="depth"):
        list_models(depth=20)
    with pytest.raises(ValueError, match="tasks"):
        list_models(tasks="classification")  # the filter is `task`


# --------------------------------------------------------------------------------------------------
# create_model


def _shapes(model):
    return [(n, tuple(t.shape)) for n, t in itertools.chain(model.named_parameters(), model.named_buffers())]


def test_attention_as_an_option_builds_the_short_names_model():
    with torch.device("meta"):
        by_option = create_model("resnet56", attention="dia", sam="eca")
        by_name = create_model("dia_resnet56", sam="eca")
        plain = create_model("resnet56")
    assert _shapes(by_option) == _shapes(by_name)
    assert _shapes(by_option) != _shapes(plain)
    for model in (by_option, by_name):
        for stage in model.stages:
            assert type(stage.controller) is DIAStageController and stage.controller.unit.sam == "eca"
            assert len(stage.blocks) == 9  # 6n + 2 = 56
    # with the same seed, the very same weights
    torch.manual_seed(1)
    a = create_model("resnet56", attention="dia", sam="eca", base_width=4)
    torch.manual_seed(1)
    b = create_model("dia_resnet56", sam="eca", base_width=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    # naming the short name's own attention again is allowed
    assert _shapes(create_model("dia_resnet20", attention="dia", base_width=4)) == \
        _shapes(create_model("dia_resnet20", base_width=4))


def test_conflicting_attention_raises():
    with pytest.raises(ValueError, match="already has attention 'dia'.*attention='se'"):
        create_model("dia_resnet20", attention="se")


@pytest.fixture
def build_calls(monkeypatch):
    """Calls of resnet20's constructor (its signature kept, so the option check is unchanged)."""
    calls = []
    entry = registry._ENTRIES["resnet20"]
    real = entry.constructor

    @functools.wraps(real)
    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setitem(registry._ENTRIES, "resnet20", dataclasses.replace(entry, constructor=spy))
    assert registry._ENTRIES["resnet20"].options("se") == entry.options("se")
    return calls


@pytest.mark.parametrize("name,options,message", [
    ("resnet20", {"reduction": 4},
     "takes no option 'reduction'; valid: num_classes, in_channels, base_width, skip, batch_norm, h"),
    ("eca_resnet20", {"reduction": 4},
     "takes no option 'reduction'; valid: num_classes, in_channels, base_width, skip, batch_norm, kernel_size"),
    ("se_resnet20", {"base_widht": 4}, "takes no option 'base_widht' (did you mean 'base_width'?); valid: "
                                       "num_classes, in_channels, base_width, skip, batch_norm, reduction, min_hidden"),
    ("se_resnet20", {"sam": "eca"}, "option 'sam' applies to shared and dia"),
    ("dia_resnet20", {"sam": "mlp"}, "unknown sam 'mlp'"),
    ("dia_resnet20", {"attention": "se"}, "already has attention"),
    ("resnet20", {"attention": "lstm"}, "unknown attention 'lstm'"),
])
def test_bad_options_raise_before_anything_is_built(build_calls, name, options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        create_model(name, **options)
    assert build_calls == []
    create_model(name, base_width=4)
    assert len(build_calls) == 1


def test_the_valid_keys_listed_are_the_models_options():
    entry = model_entry("dia_resnet20")
    with pytest.raises(ValueError) as err:
        create_model("dia_resnet20", widen=2)
    listed = str(err.value).split("valid: ")[1].split(", ")
    assert listed == entry.options("dia")
    assert {"num_classes", "in_channels", "base_width", "sam", "reduction", "cell_state", "output_gate"} <= set(listed)
    create_model("dia_resnet20", **{"base_width": 4, "reduction": 2, "cell_state": False, "output_gate": False})


def test_an_attention_the_model_does_not_list_raises():
    with pytest.raises(ValueError, match="no attention 'eca'"):
        create_model("odenet", attention="eca")
    with pytest.raises(ValueError, match="unknown model 'eca_odenet'"):
        create_model("eca_odenet")


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_short_name_still_resolves(name):
    prefix, _, base = name.rpartition("_")
    entry, attention = registry.resolve(name)
    assert entry is model_entry(name) and entry.name == base
    assert attention == (prefix or "none") and entry.full_name(attention) == name
    assert entry.family == ("preresnet" if base.startswith("pre") else "resnet") and entry.kind == "discrete"
    assert name in list_models()
    assert len(OLD_NAMES) == 72


@pytest.mark.parametrize("prefix", PREFIXES)
def test_old_short_names_build_their_attention(prefix):
    expected = {"": ConstantStep, "se_": PerBlockAttention, "eca_": PerBlockAttention, "cbam_": PerBlockAttention,
                "shared_": SharedAttention, "dia_": DIAStageController}[prefix]
    for family in ("resnet", "preresnet"):
        with torch.device("meta"):
            model = create_model(f"{prefix}{family}20")
        assert [type(s.controller) for s in model.stages] == [expected] * 3


# --------------------------------------------------------------------------------------------------
# backbones


@pytest.mark.parametrize("name,options,expected", [
    ("resnet20", {"base_width": 4}, [("stages.0", 4, 1), ("stages.1", 8, 2), ("stages.2", 16, 4)]),
    ("dia_preresnet20", {"base_width": 4}, [("stages.0", 4, 1), ("stages.1", 8, 2), ("stages.2", 16, 4)]),
    ("odenet", {"width": 8}, [("block", 8, 4)]),
    ("se_rknet", {"width": 8, "num_steps": 2}, [("block", 8, 4)]),
    ("untiednet", {"width": 8, "num_steps": 2}, [("block", 8, 4)]),
])
def test_feature_info_matches_forward_stages(name, options, expected):
    model = create_model(name, in_channels=3, num_classes=7, **options).eval()
    assert isinstance(model, AbstractBackbone)
    assert model.feature_info == [FeatureInfo(*e) for e in expected]
    modules = dict(model.named_modules())
    assert all(info.name in modules for info in model.feature_info)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        maps = model.forward_stages(x)
        assert [tuple(m.shape) for m in maps] == [(2, c, 32 // s, 32 // s) for _, c, s in expected]
        features = model.forward_features(x)
        torch.testing.assert_close(features, model.final_act(maps[-1]), rtol=0, atol=0)
        logits = model(x)
        assert logits.shape == (2, 7)
        torch.testing.assert_close(logits, model.forward_head(features), rtol=0, atol=0)
        torch.testing.assert_close(logits, model.head(features.mean(dim=(2, 3))), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# the attention table: controllers and dynamics


def test_the_attention_table():
    assert {n: s.scope for n, s in ATTENTIONS.items()} == {
        "none": "constant", "se": "per_block", "eca": "per_block", "cbam": "per_block", "shared": "shared",
        "dia": "recurrent"}
    assert [n for n, s in ATTENTIONS.items() if s.continuous] == ["none", "se", "eca", "dia"]
    assert {s.scope for s in ATTENTIONS.values()} == set(SCOPES)


CONTROLLER_OF_SCOPE = {"constant": ConstantStep, "per_block": PerBlockAttention, "shared": SharedAttention,
                       "recurrent": DIAStageController}
DYNAMICS_OF_SCOPE = {"constant": PlainDynamics, "per_block": GatedDynamics, "shared": GatedDynamics,
                     "recurrent": DIADynamics}


@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_each_scope_gives_its_controller(name):
    spec = ATTENTIONS[name]
    C, L = 8, 3
    controller = create_stage_controller(name, C, L)
    assert type(controller) is CONTROLLER_OF_SCOPE[spec.scope]
    f = torch.randn(2, C, 4, 4)
    state = controller.init(f)
    if spec.scope == "constant":
        assert controller(0, f, state) == (1.0, None)
        assert create_stage_controller(name, C, L, h=0.5)(2, f, None) == (0.5, None)
        learned = create_stage_controller(name, C, L, h="learned")  # one scalar per block, from 0
        assert type(learned) is LearnedScalarStep and learned.alpha.shape == (L,)
        h2, state2 = learned(2, f, None)
        assert torch.equal(h2, learned.alpha[2]) and h2.shape == () and not h2.any() and state2 is None
    elif spec.scope == "per_block":  # L modules of the table's class, one per block
        assert len(controller.sams) == L and len({id(m) for m in controller.sams}) == L
        assert all(type(m) is SAMS[name] for m in controller.sams)
        for k in range(L):
            torch.testing.assert_close(controller(k, f, state)[0], controller.sams[k](f))
    elif spec.scope == "shared":  # one memoryless module: the same h at every k
        assert type(controller.sam) is SqueezeExcite  # default sam
        assert type(create_stage_controller(name, C, L, sam="eca").sam) is EfficientChannelAttention
        assert type(create_stage_controller(name, C, L, sam="cbam").sam) is CBAM
        h0, h2 = controller(0, f, state)[0], controller(2, f, state)[0]
        assert h0.shape == (2, C, 1, 1) and torch.equal(h0, h2)
    else:  # one module with memory, starting at h = c = 0; the cell's weights packed once for the stage
        assert type(controller.unit) is DIAUnit
        weights, memory = state
        assert all(torch.equal(m, torch.zeros(2, C)) for m in memory)
        h, new_state = controller(0, f, state)
        ref_h, ref_memory = controller.unit(f, memory)  # the unit packing its weights for this call alone
        assert torch.equal(h, ref_h) and all(torch.equal(a, b) for a, b in zip(new_state[1], ref_memory))
        assert new_state[0] is weights
        h_again, _ = controller(1, f, new_state)
        assert not torch.equal(h_again, h)  # the memory changed the step


@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_each_scope_gives_its_dynamics(name):
    spec = ATTENTIONS[name]
    torch.manual_seed(0)
    f = ConvField(8, zero_init=False)
    if not spec.continuous:
        with pytest.raises(ValueError, match=f"attention '{name}' has no continuous form; valid: none, se, eca, dia"):
            make_dynamics(name, f, 8)
        return
    dynamics = make_dynamics(name, f, 8)
    assert type(dynamics) is DYNAMICS_OF_SCOPE[spec.scope] and dynamics.f is f
    t, x = torch.tensor(0.3), torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        fx = f(t, x)
        if spec.scope == "constant":  # dx/dt = f
            torch.testing.assert_close(dynamics(t, x), fx)
        elif spec.scope == "per_block":  # dx/dt = SAM(f) * f
            assert type(dynamics.sam) is SAMS[name]
            torch.testing.assert_close(dynamics(t, x), dynamics.sam(fx) * fx)
        else:  # (dx, dh, dc)/dt = (a * f, h' - h, c' - c) with (a, (h', c')) = DIA(f, (h, c))
            assert type(dynamics.unit) is DIAUnit
            y = dynamics.initial_state(x)
            dx, dh, dc = dynamics(t, y)
            a, (h1, c1) = dynamics.unit(fx, (y[1], y[2]))
            torch.testing.assert_close(dx, a * fx)
            torch.testing.assert_close(dh, h1 - y[1])
            torch.testing.assert_close(dc, c1 - y[2])


def test_continuous_dia_refuses_the_cbam_squeeze():
    with pytest.raises(ValueError, match="sam 'se' or 'eca'"):
        make_dynamics("dia", ConvField(8), 8, sam="cbam")
    assert make_dynamics("dia", ConvField(8), 8, sam="eca").unit.sam == "eca"


# --------------------------------------------------------------------------------------------------
# Layout: images and tokens


def test_layout_of_a_tensor_is_its_rank():
    assert Layout.of(torch.zeros(2, 3, 4, 5)) is IMAGES and Layout.of(torch.zeros(2, 4, 3)) is TOKENS
    for shape in [(2, 3), (2, 3, 4, 5, 6), (3,)]:
        with pytest.raises(ValueError, match=re.escape(str(shape))):
            Layout.of(torch.zeros(shape))


def test_squeeze_is_the_mean_over_space_or_tokens_and_expand_round_trips():
    images, tokens = torch.randn(2, 3, 4, 5), torch.randn(2, 6, 3)
    torch.testing.assert_close(IMAGES.squeeze(images), images.mean(dim=(2, 3)))
    torch.testing.assert_close(TOKENS.squeeze(tokens), tokens.mean(dim=1))
    torch.testing.assert_close(IMAGES.squeeze_max(images), images.amax(dim=(2, 3)))
    torch.testing.assert_close(TOKENS.squeeze_max(tokens), tokens.amax(dim=1))
    h = torch.randn(2, 3)
    assert IMAGES.expand(h).shape == (2, 3, 1, 1) and TOKENS.expand(h).shape == (2, 1, 3)
    assert torch.equal(IMAGES.per_channel(IMAGES.expand(h)), h) and torch.equal(TOKENS.per_channel(TOKENS.expand(h)), h)
    # the expanded step multiplies channel c of every position by h[b, c]
    torch.testing.assert_close(IMAGES.expand(h) * images, h[:, :, None, None] * images)
    torch.testing.assert_close(TOKENS.expand(h) * tokens, torch.einsum("bc,bnc->bnc", h, tokens))
    assert (IMAGES.channel_dim, TOKENS.channel_dim) == (1, -1)


def _as_images(tokens):
    """The same values laid out as images: (B, N, C) -> (B, C, N, 1)."""
    return tokens.transpose(1, 2).unsqueeze(-1)


@pytest.mark.parametrize("make", [
    lambda C: SqueezeExcite(C, reduction=2),
    lambda C: EfficientChannelAttention(C, kernel_size=3),
    lambda C: CBAMChannelGate(C, reduction=2),
], ids=["se", "eca", "cbam_channel_gate"])
def test_channel_attention_on_tokens_equals_it_on_the_same_values_as_images(make):
    torch.manual_seed(0)
    B, N, C = 2, 5, 8
    module, tokens = make(C), torch.randn(B, N, C)
    on_tokens, on_images = module(tokens), module(_as_images(tokens))
    assert on_tokens.shape == (B, 1, C) and on_images.shape == (B, C, 1, 1)
    torch.testing.assert_close(TOKENS.per_channel(on_tokens), IMAGES.per_channel(on_images), rtol=1e-6, atol=1e-6)
    assert ((on_tokens > 0) & (on_tokens < 1)).all()


def test_se_on_tokens_is_sigmoid_of_the_excited_token_mean():
    torch.manual_seed(0)
    se, tokens = SqueezeExcite(8, reduction=2), torch.randn(3, 7, 8)
    torch.testing.assert_close(se(tokens), torch.sigmoid(se.excite(tokens.mean(dim=1)))[:, None, :])


@pytest.mark.parametrize("sam", ["se", "eca"])
def test_dia_unit_on_tokens_equals_it_on_the_same_values_as_images(sam):
    torch.manual_seed(0)
    B, N, C = 2, 5, 8
    unit = DIAUnit(C, sam=sam, reduction=2, eca_kernel=3 if sam == "eca" else None)
    f1, f2 = torch.randn(B, N, C), torch.randn(B, N, C)
    state_t, state_i = unit.init_state(f1), unit.init_state(_as_images(f1))
    assert all(m.shape == (B, C) for m in state_t)
    for f in (f1, f2):  # two blocks: the memory carries over
        a_t, state_t = unit(f, state_t)
        a_i, state_i = unit(_as_images(f), state_i)
        assert a_t.shape == (B, 1, C) and a_i.shape == (B, C, 1, 1)
        torch.testing.assert_close(TOKENS.per_channel(a_t), IMAGES.per_channel(a_i), rtol=1e-6, atol=1e-6)
        for m_t, m_i in zip(state_t, state_i):
            torch.testing.assert_close(m_t, m_i, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(TOKENS.per_channel(a_t), state_t[0])  # a = h (no spatial gate)


def test_cbam_on_tokens_raises():
    tokens = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="tokens have no 2-D grid"):
        CBAM(8, reduction=2)(tokens)
    unit = DIAUnit(8, sam="cbam")
    with pytest.raises(ValueError, match="tokens have no 2-D grid"):
        unit(tokens, unit.init_state(tokens))
    assert CBAM(8, reduction=2)(_as_images(tokens)).shape == (2, 8, 5, 1)  # images are fine


@pytest.mark.parametrize("make", [
    lambda: SqueezeExcite(8, reduction=2), lambda: EfficientChannelAttention(8), lambda: CBAMChannelGate(8),
    lambda: CBAM(8),
], ids=["se", "eca", "cbam_channel_gate", "cbam"])
def test_a_2d_tensor_raises(make):
    with pytest.raises(ValueError, match=r"images \(B, C, H, W\) or tokens \(B, N, C\)"):
        make()(torch.randn(2, 8))


def test_dia_unit_refuses_a_2d_tensor():
    unit = DIAUnit(8)
    f = torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"images \(B, C, H, W\) or tokens \(B, N, C\)"):
        unit(f, unit.init_state(f))


@pytest.mark.parametrize("name,options,message", [
    ("vit_tiny", {"heads": "abc"}, "option 'heads' takes int, got 'abc'"),
    ("vit_tiny", {"dropout": True}, "option 'dropout' takes float, got True"),  # a bool is no number here
    ("dia_resnet20", {"reduction": 2.5}, "option 'reduction' takes int, got 2.5"),  # the attention's own option
    ("dia_resnet20", {"cell_state": "no"}, "option 'cell_state' takes bool, got 'no'"),
    ("odenet", {"step_size": "x", "method": "euler"}, "option 'step_size' takes float or None, got 'x'"),
])
def test_option_values_are_checked_against_the_annotations_before_building(name, options, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, **options)


def test_option_values_that_fit_their_annotations_pass():
    # an int where a float is annotated, None where the annotation allows it
    model = create_model("vit_tiny", image_size=8, in_channels=1, mlp_ratio=2, patch_size=None)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_described_options_have_types_and_defaults_and_the_constant_step_only_where_it_applies():
    rows = {name: (kind, default) for name, kind, default in model_entry("resnet20").describe_options("none")}
    assert rows["h"] == ("float or 'learned'", ConstantStep().h)  # the default a resnet20 built without h uses
    assert "required" not in [default for _, default in rows.values()]
    dia = {name: default for name, _, default in model_entry("resnet20").describe_options("dia")}
    assert dia["reduction"] == inspect.signature(DIAUnit).parameters["reduction"].default and "h" not in dia
    odenet = [name for name, _, _ in model_entry("odenet").describe_options("none")]
    assert "h" not in odenet  # dx/dt = f has no step to set
    with pytest.raises(ValueError, match="takes no option 'h'"):
        create_model("odenet", h=0.5)
