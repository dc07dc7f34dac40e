"""How a run computes beside where: autocast precision, torch.compile and the channels-last layout.

All three are torch's own (torch.amp, torch.compile, memory formats). This file decides which settings
exist and which devices or models refuse them, and applies them the same way for the trainer and the
benches, so a bench measures what a run does.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from dia_ode.data.strides import has_standard_strides, with_standard_strides
from dia_ode.engine.config import ConfigError

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_acceleration(*, precision: str, compile: bool, compile_mode: str, channels_last: bool,
                       device: torch.device, continuous: bool = False) -> None:
    """Raise ConfigError naming the first setting that cannot run on `device` (or for a continuous-depth
    model); the device-free checks (known names) are TrainConfig.validate's."""
    if precision == "fp16" and device.type != "cuda":
        # CPUs without AVX512-FP16 emulate half precision: slower than fp32, and nothing to learn from
        raise ConfigError("precision", f"precision fp16 needs a CUDA device, this run computes on {device.type}; "
                                       f"use bf16 on the CPU")
    if precision != "fp32" and continuous:
        raise ConfigError("precision", f"precision {precision} keeps about 3 significant digits, fewer than the ODE "
                                       f"solver's tolerances ask of the field: continuous-depth models train in fp32")
    if compile and compile_mode in ("reduce-overhead",) and device.type != "cuda":
        raise ConfigError("compile_mode", f"compile mode {compile_mode} records CUDA graphs and needs a CUDA device, "
                                          f"this run computes on {device.type}")
    if compile and not torch._dynamo.is_dynamo_supported():
        raise ConfigError("compile", "torch.compile is not supported by this Python and torch build; "
                                     "train without --compile")
    if channels_last and device.type not in ("cpu", "cuda"):
        raise ConfigError("channels_last", f"channels-last is a layout of CPU and CUDA kernels, not of {device.type}")


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of `precision` on `device` (fp32: none): matmuls and convolutions in the
    half type, reductions and losses in fp32 (torch's per-operation lists)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


class GradientStep:
    """backward and the optimizer step, through torch's GradScaler under fp16 (whose small gradients
    would flush to zero unscaled) and directly otherwise (bf16 has fp32's exponent range)."""

    def __init__(self, precision: str, device: torch.device) -> None:
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients to their true scale (before clipping them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The update; under fp16 one with Inf/NaN gradients is skipped and the scale lowered."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def compiled(module: nn.Module, mode: str = "default") -> nn.Module:
    """torch.compile of `module` in `mode`; the parameters stay the module's own (saved and analysed)."""
    return torch.compile(module, mode=None if mode == "default" else mode)


def to_channels_last(module: nn.Module) -> nn.Module:
    """`module` with its 4-D parameters and buffers in channels_last, in place.

    A tensor with one input channel or a 1x1 kernel has the same memory order in both formats, but
    channels_last strides make it ambiguous to torch (data/strides.py: the oneDNN convolution backward
    corrupts the heap on such strides on some CPUs), so those keep standard strides.
    """
    module.to(memory_format=torch.channels_last)
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.dim() == 4 and tensor.is_contiguous() and not has_standard_strides(tensor):
            tensor.data = with_standard_strides(tensor.data)
    return module


def channels_last_batch(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) batch in channels_last; with one channel (ambiguous strides) it keeps standard ones."""
    if x.dim() != 4 or x.shape[1] == 1:
        return with_standard_strides(x)
    return x.contiguous(memory_format=torch.channels_last)
