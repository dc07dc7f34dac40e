"""Tests for dia_ode.engine: lr schedules, optimizers, config validation and recipes, gradient clipping,
the task check of model_spec, the one-process DistContext, and the data sharding the trainer relies on.

Training runs here use dia_resnet20 at base_width 4 on a small slice of digits (one to four steps per
epoch), and figures are not drawn (plot_history is replaced), so the whole file takes a few seconds.
"""

import json
import math
from dataclasses import asdict, replace

import pytest
import torch
from torch import nn

from dia_ode.data import Augment, Split, global_batches, iterate_batches, load_dataset, shard_split
from dia_ode.engine import (DistContext, TrainConfig, Trainer, apply_recipe, build_optimizer, from_environment,
                            learning_rate, model_spec, unwrap)
from dia_ode.engine import trainer as trainer_module
from dia_ode.models import create_model, register_model
from dia_ode.models import registry
from dia_ode.rundir import CHECKPOINT, load_checkpoint, read_jsonl, start_run
from dia_ode.tasks import get_task

TINY_OPTIONS = {"base_width": 4}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture
def no_figures(monkeypatch):
    monkeypatch.setattr(trainer_module, "plot_history", lambda *args, **kwargs: None)


def _train_slice(dataset, n):
    """The dataset with only its first n training samples (val, test and statistics unchanged)."""
    return replace(dataset, train=Split(dataset.train.images[:n], dataset.train.labels[:n]))


def _run_dir(tmp_path, cfg):
    return start_run(tmp_path / "runs", "train", {"command": "train", **asdict(cfg)}, argv=["test"])


def _record_lrs(trainer):
    """Make trainer.optimizer.step record the lr of every param group just before each step."""
    seen, real_step = [], trainer.optimizer.step

    def step(*args, **kwargs):
        seen.append([group["lr"] for group in trainer.optimizer.param_groups])
        return real_step(*args, **kwargs)

    trainer.optimizer.step = step
    return seen


# --------------------------------------------------------------------------------------------------
# learning_rate


def test_cosine_schedule_per_epoch():
    cfg = TrainConfig(lr=0.2, epochs=10, schedule="cosine")
    assert learning_rate(cfg, 0) == pytest.approx(0.2, abs=1e-15)
    assert learning_rate(cfg, 5) == pytest.approx(0.1, abs=1e-15)  # E/2: cos(pi/2) = 0
    for e in range(10):  # lr_e = lr / 2 * (1 + cos(pi e / E))
        assert learning_rate(cfg, e) == pytest.approx(0.1 * (1 + math.cos(math.pi * e / 10)), rel=1e-12)
        # per epoch: the step within the epoch does not matter
        assert learning_rate(cfg, e, step=7, steps_per_epoch=8) == learning_rate(cfg, e)
    assert learning_rate(cfg, 9) == pytest.approx(0.1 * (1 - math.cos(math.pi / 10)), rel=1e-12)  # ~0.0024


def test_step_schedule_at_its_milestones():
    # milestones 0.3 and 0.6 of 10 epochs are epochs 3 and 6: lr_e = lr * gamma ** #{milestones <= e}
    cfg = TrainConfig(lr=0.4, epochs=10, schedule="step", milestones=(0.3, 0.6), gamma=0.5)
    expected = [0.4] * 3 + [0.2] * 3 + [0.1] * 4
    assert [learning_rate(cfg, e) for e in range(10)] == pytest.approx(expected, rel=1e-12)
    assert learning_rate(cfg, 5) == pytest.approx(0.2)  # E/2
    assert learning_rate(cfg, 3, step=0, steps_per_epoch=4) == learning_rate(cfg, 3, step=3, steps_per_epoch=4)


def test_warmup_cosine_per_step():
    lr, E, W, S = 1e-3, 10, 2, 4  # 4 steps per epoch: every t = epoch + step / S is exact in binary
    cfg = TrainConfig(optimizer="adamw", lr=lr, epochs=E, schedule="warmup_cosine", warmup_epochs=W)
    lrs = [learning_rate(cfg, g // S, g % S, S) for g in range(E * S)]
    # warm-up: global step g < W * S gets lr * (g + 1) / (W * S): above 0 at the first step, and
    # exactly lr at the last warm-up step
    assert lrs[0] == lr / 8 > 0
    for g in range(W * S):
        assert lrs[g] == pytest.approx(lr * (g + 1) / (W * S), rel=1e-12)
    assert lrs[W * S - 1] == lr
    assert all(a < b for a, b in zip(lrs[:W * S - 1], lrs[1:W * S]))
    # then a cosine from lr to 0 over the remaining E - W epochs: lr / 2 * (1 + cos(pi (t - W) / (E - W)))
    for g in range(W * S, E * S):
        t = g / S
        assert lrs[g] == pytest.approx(0.5 * lr * (1 + math.cos(math.pi * (t - W) / (E - W))), rel=1e-12)
    assert lrs[W * S] == lr  # t = W: progress 0
    assert lrs[(W + E) // 2 * S] == pytest.approx(lr / 2, rel=1e-12)  # t = 6, half way through the decay
    assert all(a >= b for a, b in zip(lrs[W * S:], lrs[W * S + 1:]))
    assert 0 < lrs[-1] < 3e-3 * lr  # t = 9.75: lr / 2 * (1 + cos(pi * 7.75 / 8)) = 2.4e-6
    assert lrs[-1] == pytest.approx(0.5 * lr * (1 + math.cos(math.pi * 7.75 / 8)), rel=1e-12)


def test_warmup_cosine_with_five_steps_per_epoch_reaches_lr_at_the_end_of_warm_up():
    cfg = TrainConfig(optimizer="adamw", lr=3e-3, epochs=4, schedule="warmup_cosine", warmup_epochs=1)
    assert learning_rate(cfg, 0, 0, 5) == pytest.approx(3e-3 / 5, rel=1e-12)
    assert learning_rate(cfg, 0, 4, 5) == pytest.approx(3e-3, rel=1e-12)
    assert learning_rate(cfg, 1, 0, 5) == pytest.approx(3e-3, rel=1e-12)
    assert learning_rate(cfg, 1, 1, 5) < 3e-3


@pytest.mark.parametrize("warmup,steps", [
    (1, 4), (2, 21), (0.5, 4), (0.25, 4),  # W * S whole: the ramp ends exactly on a step
    (0.5, 1), (0.5, 3), (0.5, 21), (1.5, 5),  # not whole: the ramp is capped at the peak (21: digits, b = 64)
])
def test_warmup_cosine_never_exceeds_the_peak_lr(warmup, steps):
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, epochs=4, schedule="warmup_cosine", warmup_epochs=warmup)
    lrs = [learning_rate(cfg, e, s, steps) for e in range(4) for s in range(steps)]
    assert max(lrs) <= cfg.lr
    assert lrs[0] > 0


def test_learning_rate_is_a_pure_function_so_a_resumed_run_gets_the_same_lr():
    cfg = TrainConfig(optimizer="adamw", lr=1e-3, epochs=6, schedule="warmup_cosine", warmup_epochs=1.5)
    points = [(e, s) for e in range(6) for s in range(3)]
    forward = [learning_rate(cfg, e, s, 3) for e, s in points]
    # a resumed run: config read back from config.json, starting in the middle, in any order
    saved = TrainConfig.from_dict(json.loads(json.dumps(asdict(cfg))))
    backward = [learning_rate(saved, e, s, 3) for e, s in reversed(points)][::-1]
    assert forward == backward
    resumed_from_epoch_3 = [learning_rate(saved, e, s, 3) for e, s in points if e >= 3]
    assert resumed_from_epoch_3 == forward[9:]


# --------------------------------------------------------------------------------------------------
# build_optimizer


def test_sgd_keeps_momentum_nesterov_and_weight_decay():
    model = create_model("resnet20", base_width=4)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)
    opt = build_optimizer(cfg, model)
    assert type(opt) is torch.optim.SGD
    (group,) = opt.param_groups
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.8, True, 1e-3)
    assert [id(p) for p in group["params"]] == [id(p) for p in model.parameters()]


def test_adamw_decays_matrices_and_kernels_but_not_biases_or_norms():
    model = create_model("dia_resnet20", base_width=4)
    cfg = TrainConfig(optimizer="adamw", lr=2e-3, weight_decay=0.05)
    opt = build_optimizer(cfg, model)
    assert type(opt) is torch.optim.AdamW
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert decay["lr"] == no_decay["lr"] == 2e-3
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    # every parameter in exactly one group
    ids = [id(p) for p in decay["params"]] + [id(p) for p in no_decay["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    named = dict(model.named_parameters())
    decayed = {id(p) for p in decay["params"]}
    assert id(named["head.weight"]) in decayed and id(named["stem.0.weight"]) in decayed  # (10, 16) and a conv
    assert id(named["head.bias"]) not in decayed and id(named["stem.1.weight"]) not in decayed  # bias, BN scale
    bn_and_bias = [n for n, p in named.items() if n.endswith(".bias") or p.dim() == 1]
    assert bn_and_bias and all(id(named[n]) not in decayed for n in bn_and_bias)


# --------------------------------------------------------------------------------------------------
# TrainConfig


@pytest.mark.parametrize("fields,name,value", [
    ({"optimizer": "adam"}, "optimizer", "adam"),
    ({"schedule": "linear"}, "schedule", "linear"),
    ({"schedule": "cosine", "warmup_epochs": 1}, "warmup_epochs", "cosine"),
    ({"schedule": "step", "warmup_epochs": 0.5}, "warmup_epochs", "step"),
    ({"schedule": "warmup_cosine", "warmup_epochs": 30, "epochs": 30}, "warmup_epochs", "30"),
    ({"schedule": "warmup_cosine", "warmup_epochs": 31, "epochs": 30}, "warmup_epochs", "31"),
    ({"schedule": "warmup_cosine", "warmup_epochs": -1}, "warmup_epochs", "-1"),
    ({"clip_grad": 0.0}, "clip_grad", "0.0"),
    ({"clip_grad": -1.0}, "clip_grad", "-1.0"),
])
def test_validate_names_the_bad_field(fields, name, value):
    cfg = TrainConfig(**fields)
    with pytest.raises(ValueError) as err:
        cfg.validate()
    assert name in str(err.value) and value in str(err.value)


@pytest.mark.parametrize("fields", [
    {},
    {"optimizer": "adamw", "schedule": "warmup_cosine", "warmup_epochs": 29.5},
    {"schedule": "warmup_cosine", "warmup_epochs": 0},
    {"schedule": "step", "clip_grad": 1e-6},
])
def test_validate_accepts_good_configs(fields):
    TrainConfig(**fields).validate()


def test_from_dict_ignores_unknown_keys_and_fills_missing_ones():
    old = {"model": "resnet20", "dataset": "digits", "epochs": 3, "batch_size": 32, "lr": 0.05,
           "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step", "milestones": [0.5, 0.75], "gamma": 0.1,
           "augment": False, "seed": 1, "split_seed": 0, "val_fraction": 0.1, "device": "cpu",
           "model_options": {"base_width": 8},
           # not config fields: written by start_run and the CLI
           "command": "train", "versions": {"torch": "2.0"}, "a_field_from_the_future": 1}
    cfg = TrainConfig.from_dict(old)
    cfg.validate()
    defaults = TrainConfig()
    assert (cfg.task, cfg.optimizer, cfg.nesterov, cfg.warmup_epochs, cfg.clip_grad, cfg.sync_bn) == \
        (defaults.task, defaults.optimizer, defaults.nesterov, defaults.warmup_epochs, defaults.clip_grad,
         defaults.sync_bn) == ("classification", "sgd", False, 0.0, None, False)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.schedule, cfg.augment, cfg.seed, cfg.model_options) == \
        ("resnet20", 3, 0.05, "step", False, 1, {"base_width": 8})
    assert cfg.milestones == (0.5, 0.75) and isinstance(cfg.milestones, tuple)
    assert not hasattr(cfg, "versions") and not hasattr(cfg, "a_field_from_the_future")


def test_from_dict_round_trips_through_json():
    cfg = TrainConfig(model="vit_tiny", optimizer="adamw", lr=2e-3, schedule="warmup_cosine", warmup_epochs=2,
                      clip_grad=1.0, milestones=(0.25,), model_options={"dim": 16})
    assert TrainConfig.from_dict(json.loads(json.dumps(asdict(cfg)))) == cfg


# --------------------------------------------------------------------------------------------------
# apply_recipe

RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "schedule": "warmup_cosine", "warmup_epochs": 2,
          "epochs": 40}


def _values(**given):
    return {**asdict(TrainConfig()), **given}


def test_recipe_fills_every_field_the_user_left_alone():
    values = _values()
    out = apply_recipe(values, RECIPE, set())
    assert out == {**values, **RECIPE}
    assert values == asdict(TrainConfig())  # the input is not modified
    TrainConfig(**out).validate()


def test_user_given_fields_win_over_the_recipe():
    out = apply_recipe(_values(lr=0.01, epochs=3), RECIPE, {"lr", "epochs"})
    assert (out["lr"], out["epochs"]) == (0.01, 3)
    assert (out["optimizer"], out["weight_decay"], out["schedule"], out["warmup_epochs"]) == \
        ("adamw", 0.05, "warmup_cosine", 2 * 3 / 40)  # the warm-up keeps its fraction of the run


def test_another_optimizer_drops_the_recipes_optimizer_bound_values():
    defaults = TrainConfig()
    out = apply_recipe(_values(optimizer="sgd"), RECIPE, {"optimizer"})
    assert (out["optimizer"], out["lr"], out["weight_decay"], out["schedule"], out["warmup_epochs"]) == \
        ("sgd", defaults.lr, defaults.weight_decay, defaults.schedule, defaults.warmup_epochs)
    assert out["epochs"] == 40  # not bound to the optimizer: still the recipe's
    TrainConfig(**out).validate()
    # naming the recipe's own optimizer keeps the whole recipe
    same = apply_recipe(_values(optimizer="adamw"), RECIPE, {"optimizer"})
    assert same == {**_values(), **RECIPE}


def test_a_schedule_without_warm_up_drops_the_recipes_warm_up():
    out = apply_recipe(_values(schedule="cosine"), RECIPE, {"schedule"})
    assert (out["schedule"], out["warmup_epochs"], out["optimizer"], out["lr"]) == ("cosine", 0.0, "adamw", 1e-3)
    TrainConfig(**out).validate()
    kept = apply_recipe(_values(schedule="warmup_cosine"), RECIPE, {"schedule"})
    assert kept["warmup_epochs"] == 2


def test_unknown_recipe_key_raises():
    with pytest.raises(ValueError, match="learning_rate"):
        apply_recipe(_values(), {"learning_rate": 1e-3, "lr": 1e-3}, set())


def test_every_registered_recipe_gives_a_valid_config():
    for entry in registry._ENTRIES.values():
        if entry.recipe:
            cfg = TrainConfig(**apply_recipe(_values(model=entry.name), dict(entry.recipe), {"model"}))
            cfg.validate()
            assert all(getattr(cfg, k) == v for k, v in entry.recipe)


# --------------------------------------------------------------------------------------------------
# Trainer: clipping, AdamW + warm-up end to end


def _one_step_update(tmp_path, digits, clip):
    """Parameters after minus before one SGD step (lr 0.1, no momentum or decay) on 64 digits."""
    cfg = TrainConfig(model="dia_resnet20", epochs=1, batch_size=64, lr=0.1, momentum=0.0, weight_decay=0.0,
                      clip_grad=clip, augment=False, device="cpu", model_options=TINY_OPTIONS)
    trainer = Trainer(cfg, _run_dir(tmp_path / str(clip), cfg), dataset=_train_slice(digits, 64), progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    return [p.detach() - b for p, b in zip(trainer.model.parameters(), before)]


def test_clip_grad_scales_the_global_gradient_to_the_clip_norm(tmp_path, digits, no_figures):
    free = _one_step_update(tmp_path, digits, None)
    clipped = _one_step_update(tmp_path, digits, 1e-3)
    norm = lambda ds: torch.sqrt(sum((d.double() ** 2).sum() for d in ds)).item()  # noqa: E731
    lr, clip = 0.1, 1e-3
    grad_norm = norm(free) / lr  # the unclipped step is -lr * g
    assert grad_norm > 100 * clip  # so the clip is active
    # clip_grad_norm_: g <- g * clip / (||g|| + 1e-6), over all parameters together
    assert norm(clipped) == pytest.approx(lr * clip, rel=1e-3)
    # the direction is the unclipped one: delta_clipped = delta_free * clip / ||g||, up to the float32
    # rounding of p + delta (about 3e-8 per element next to elements of about 1e-6)
    scale = clip / (grad_norm + 1e-6)
    error = norm([d_clip - d_free * scale for d_clip, d_free in zip(clipped, free)])
    assert error < 0.02 * norm(clipped)


def test_adamw_with_warmup_cosine_trains_end_to_end(tmp_path, digits, no_figures):
    cfg = TrainConfig(model="dia_resnet20", optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="warmup_cosine",
                      warmup_epochs=1, epochs=2, batch_size=64, device="cpu", model_options=TINY_OPTIONS)
    run_dir = _run_dir(tmp_path, cfg)
    trainer = Trainer(cfg, run_dir, dataset=_train_slice(digits, 256), progress=False)  # 4 steps per epoch
    seen = _record_lrs(trainer)
    summary = trainer.fit()

    lr = 2e-3
    # epoch 0: lr * (s + 1) / 4; epoch 1: lr / 2 * (1 + cos(pi * s / 4))
    expected = [lr / 4, lr / 2, 3 * lr / 4, lr] + [0.5 * lr * (1 + math.cos(math.pi * s / 4)) for s in range(4)]
    assert len(seen) == 8
    for got, want, (e, s) in zip(seen, expected, [(e, s) for e in range(2) for s in range(4)]):
        assert got == [pytest.approx(want, rel=1e-12)] * 2  # both groups (decay, no decay)
        assert got[0] == learning_rate(cfg, e, s, 4)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["lr"] for r in rows] == [learning_rate(cfg, 0, 0, 4), learning_rate(cfg, 1, 0, 4)]  # first steps
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert math.isfinite(summary["test_loss"]) and summary["epochs"] == 2
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    assert ckpt["epoch"] == 2 and ckpt["config"]["optimizer"] == "adamw"
    assert [g["weight_decay"] for g in ckpt["optimizer"]["param_groups"]] == [0.05, 0.0]
    assert ckpt["model_spec"] == {"name": "dia_resnet20",
                                  "options": {"num_classes": 10, "in_channels": 1, "base_width": 4}}


# --------------------------------------------------------------------------------------------------
# model_spec


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the model registry: models registered in a test vanish with it."""
    monkeypatch.setattr(registry, "_ENTRIES", dict(registry._ENTRIES))
    return registry._ENTRIES


def test_model_spec_refuses_a_model_without_the_task(digits, scratch_registry, tmp_path):
    def throwaway_detector(attention="none", num_classes=10, in_channels=3):
        return nn.Linear(in_channels, num_classes)

    register_model("throwaway_detector_3f9a", family="test", tasks=("detection",),
                   attentions=("none",))(throwaway_detector)
    cfg = TrainConfig(model="throwaway_detector_3f9a", task="classification", device="cpu")
    with pytest.raises(ValueError, match="does not support task 'classification'") as err:
        model_spec(cfg.model, cfg.model_options, get_task("classification"), digits)
    assert "detection" in str(err.value)  # what it does serve
    with pytest.raises(ValueError, match="does not support task"):
        Trainer(cfg, tmp_path, dataset=digits, progress=False)


def test_model_spec_passes_image_size_only_to_models_that_take_it(digits, scratch_registry):
    def sized_net(attention="none", num_classes=10, in_channels=3, image_size=32):
        return nn.Linear(in_channels * image_size ** 2, num_classes)

    register_model("throwaway_sized_3f9a", family="test", attentions=("none",))(sized_net)
    task = get_task("classification")
    sized = model_spec("throwaway_sized_3f9a", {}, task, digits)
    assert sized == {"name": "throwaway_sized_3f9a", "options": {"num_classes": 10, "in_channels": 1, "image_size": 8}}
    plain = model_spec("dia_resnet20", {"base_width": 4, "reduction": 2}, task, digits)
    assert plain == {"name": "dia_resnet20",
                     "options": {"num_classes": 10, "in_channels": 1, "base_width": 4, "reduction": 2}}
    assert "throwaway_sized_3f9a" in registry.list_models()


def test_scratch_registry_is_restored():
    assert "throwaway_detector_3f9a" not in registry._ENTRIES
    assert "throwaway_sized_3f9a" not in registry._ENTRIES


# --------------------------------------------------------------------------------------------------
# DistContext and data sharding


def test_reduced_sums_keep_the_callers_key_order(monkeypatch):
    from dia_ode.engine import distributed

    calls = []
    monkeypatch.setattr(distributed.torch_dist, "all_reduce", lambda t: calls.append(t.clone()) or t.mul_(2))
    ctx = DistContext(torch.device("cpu"), rank=0, world_size=2)
    reduced = ctx.all_reduce_sums({"loss": 1.0, "acc": 3.0, "count": 4.0})
    assert list(reduced) == ["loss", "acc", "count"] and reduced == {"loss": 2.0, "acc": 6.0, "count": 8.0}
    assert calls[0].tolist() == [3.0, 4.0, 1.0]  # reduced in sorted-key order, the same on every rank


def test_one_process_dist_context_is_the_identity(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = from_environment("cpu")
    assert ctx == DistContext(torch.device("cpu"))
    assert (ctx.rank, ctx.world_size, ctx.shard, ctx.enabled, ctx.is_main) == (0, 1, (0, 1), False, True)
    assert ctx.device == torch.device("cpu")
    sums = {"loss": 2.5, "acc": 3.0, "count": 4.0}
    reduced = ctx.all_reduce_sums(sums)
    assert reduced == sums and reduced is not sums
    obj = {"run_dir": "x"}
    assert ctx.broadcast(obj) is obj
    model = create_model("resnet20", base_width=4)
    assert ctx.wrap(model) is model and ctx.wrap(model, sync_bn=True) is model
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert unwrap(model) is model
    ctx.close()  # nothing to close


def _id_split(n):
    images = (torch.arange(n * 9) % 251).to(torch.uint8).view(n, 1, 3, 3)
    return Split(images, torch.arange(n))  # label = sample id


@pytest.mark.parametrize("augment", [None, Augment(pad=1, flip=True)])
@pytest.mark.parametrize("n", [23, 24])
def test_two_shards_of_every_batch_make_the_unsharded_batch(augment, n):
    split = _id_split(n)

    def epoch(shard):
        return list(iterate_batches(split, 6, mean=(0.5,), std=(0.25,), shuffle=True, augment=augment,
                                    generator=torch.Generator().manual_seed(3), shard=shard))

    whole, rank0, rank1 = epoch((0, 1)), epoch((0, 2)), epoch((1, 2))
    assert len(whole) == len(rank0) == len(rank1) == math.ceil(n / 6)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, rank0, rank1):
        assert len(y0) == math.ceil(len(y) / 2) and len(y1) == len(y) // 2  # tensor_split: rank 0 first
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)
    assert sorted(torch.cat([y for _, y in whole]).tolist()) == list(range(n))


def test_a_last_batch_smaller_than_the_world_is_dropped():
    assert global_batches(25, 6, 1) == [(0, 6), (6, 6), (12, 6), (18, 6), (24, 1)]
    assert global_batches(25, 6, 2) == [(0, 6), (6, 6), (12, 6), (18, 6)]  # 1 sample for 2 ranks: dropped
    assert global_batches(26, 6, 2) == [(0, 6), (6, 6), (12, 6), (18, 6), (24, 2)]
    assert global_batches(26, 6, 3) == [(0, 6), (6, 6), (12, 6), (18, 6)]
    assert global_batches(23, 6, 1, drop_last=True) == [(0, 6), (6, 6), (12, 6)]
    split = _id_split(25)
    for rank in (0, 1):
        sizes = [len(y) for _, y in iterate_batches(split, 6, mean=(0.5,), std=(0.25,), shard=(rank, 2))]
        assert sizes == [3, 3, 3, 3]
    ys = [torch.cat([y for _, y in iterate_batches(split, 6, mean=(0.5,), std=(0.25,), shard=(r, 2))])
          for r in (0, 1)]
    assert sorted(torch.cat(ys).tolist()) == list(range(24))  # sample 24 is the dropped batch


@pytest.mark.parametrize("n,world", [(23, 2), (23, 3), (7, 7), (5, 1)])
def test_shard_split_partitions_a_split(n, world):
    split = _id_split(n)
    parts = [shard_split(split, r, world) for r in range(world)]
    assert [len(p) for p in parts] == [len(t) for t in torch.arange(n).tensor_split(world)]
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    assert torch.equal(torch.cat([p.labels for p in parts]), split.labels)  # contiguous, in order, disjoint
    assert torch.equal(torch.cat([p.images for p in parts]), split.images)
