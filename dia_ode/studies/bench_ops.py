"""Aten operations per training step: the work a GPU pays for, counted on any device.

On a GPU, small models are launch-bound: a step costs about one kernel launch per aten operation that
reaches a kernel, whatever the tensors' sizes. Counting the operations that pass the dispatcher is
therefore a proxy for launches that needs no GPU and is deterministic, where timing is noisy.

The counter is a TorchDispatchMode (torch's own machinery, as FlopCounterMode uses): it sees every call
below autograd, once per operation a tensor's kernel runs, including the backward formulas and the
optimizer's updates while it is active. Composite operations arrive already decomposed (linear as
t + addmm, cross-entropy as _log_softmax + nll_loss_forward), and what a kernel calls inside itself is
not seen again, so the count is of dispatcher calls at the level a backend implements. Calls that
launch no kernel are in the count too: views (detach, t, unsqueeze; also counted apart) and the
profiler's markers around zero_grad and the optimizer's step.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from dia_ode.studies.bench_train_step import bench_batch_and_models, bench_optimizer, step_loss, train_step

TOP_OPS = 10  # the per-model top list in bench.json; the full breakdown is there too


class OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched while it is entered, by phase and by op name.

    An op is named by its overload packet (`aten.add`), so `add.Tensor` and `add_.Tensor` stay apart
    (add vs add_) but overloads of one op are summed. The phase is a label the caller sets with
    `phase(name)`; counts go to "all" outside any phase. Views (ops whose result aliases an input)
    are also counted apart, per phase, as they launch no kernel.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = "all"
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.views: Counter[str] = Counter()  # phase -> view ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[self.current][func.overloadpacket.__name__] += 1
        self.views[self.current] += func.is_view
        return func(*args, **(kwargs or {}))

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count what runs inside under `name`, then go back to the enclosing phase."""
        outer, self.current = self.current, name
        try:
            yield
        finally:
            self.current = outer

    def total(self, phase: str | None = None) -> int:
        """Operations counted in `phase`, or in every phase together."""
        return sum(self.by_op(phase).values())

    def total_views(self, phase: str | None = None) -> int:
        """View operations counted in `phase`, or in every phase together."""
        return self.views[phase] if phase is not None else sum(self.views.values())

    def by_op(self, phase: str | None = None) -> Counter[str]:
        """Operation name -> count in `phase`, or summed over every phase."""
        if phase is not None:
            return Counter(self.counts.get(phase, {}))
        return sum(self.counts.values(), Counter())


def count_ops(fn: Callable[[], object]) -> OpCounter:
    """The operations `fn()` dispatches (autograd's backward included, if fn calls it)."""
    with OpCounter() as counter:
        fn()
    return counter


@contextmanager
def _model_phase(model: nn.Module, counter: OpCounter) -> Iterator[None]:
    """Count the model's own forward as the phase "model", apart from the loss around it."""
    outer: list[str] = []

    def enter(module, args):
        outer.append(counter.current)
        counter.current = "model"

    def leave(module, args, output):
        counter.current = outer.pop()

    handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def count_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Callable | None = None,
                     foreach: bool | None = None) -> OpCounter:
    """Operations of one training step, after one uncounted warm-up step.

    The warm-up matters: the first step creates the momentum buffers (a copy per parameter instead of
    an update) and whatever a model initialises lazily, which no later step repeats. Phases: "model"
    (the model's forward, in train mode), "forward" (the rest of the loss: cross-entropy, a DDPM noise
    draw), "backward" and "optimizer" (zero_grad and the update).
    """
    optimizer = bench_optimizer(model, foreach=foreach)
    model.train()
    train_step(model, optimizer, x, y, loss)  # warm-up: momentum buffers, lazy state
    with OpCounter() as counter, _model_phase(model, counter):
        train_step(model, optimizer, x, y, loss, phase=counter.phase)
    return counter


def bench_ops(models: list[str], *, batch_size: int = 64, image_size: int = 32, in_channels: int = 3,
              num_classes: int = 10, device: torch.device | str = "cpu", channels_last: bool = False,
              foreach: bool | None = None, seed: int = 0, model_options: dict[str, dict] | None = None
              ) -> list[dict]:
    """Aten operations per forward and per training step of each model; ratios relative to the first.

    The batch, models and loss are bench_train_step's (one SGD step with momentum, cross-entropy or
    the DDPM loss), so the two benches measure the same step.

    Args:
        foreach: the optimizer's multi-tensor kernels (True: as CUDA runs them, one launch for many
            parameters); None takes torch's default for the device.
        model_options: name -> constructor options of that model.

    Returns:
        One row per model: model, params, forward_ops (the model's forward in train mode), step_ops,
        step_view_ops (those of step_ops that are views), step_ops_by_phase (model, forward, backward, optimizer), forward_ratio_to_first, ratio_to_first
        (of step_ops), top_ops ([op, count] of the step, the TOP_OPS most frequent), step_ops_by_op and
        forward_ops_by_op (every op, most frequent first).
    """
    x, y, built = bench_batch_and_models(models, batch_size=batch_size, image_size=image_size,
                                         in_channels=in_channels, num_classes=num_classes, device=device,
                                         channels_last=channels_last, seed=seed, model_options=model_options)
    rows = []
    for name, model in built.items():
        counter = count_train_step(model, x, y, step_loss(name), foreach=foreach)
        step = counter.by_op()
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()),
                     "forward_ops": counter.total("model"), "step_ops": counter.total(),
                     "step_view_ops": counter.total_views(),
                     "step_ops_by_phase": {phase: counter.total(phase)
                                           for phase in ("model", "forward", "backward", "optimizer")},
                     "top_ops": [[op, n] for op, n in step.most_common(TOP_OPS)],
                     "step_ops_by_op": dict(step.most_common()),
                     "forward_ops_by_op": dict(counter.by_op("model").most_common())})
    for row in rows:
        row["forward_ratio_to_first"] = row["forward_ops"] / rows[0]["forward_ops"]
        row["ratio_to_first"] = row["step_ops"] / rows[0]["step_ops"]
    return rows
