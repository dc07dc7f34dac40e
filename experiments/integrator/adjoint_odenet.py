"""I1 (experiments/README.md): the adjoint on odenet's ReLU field, both engines, against backpropagation.

A tiny odenet (width 4, 8x8 inputs, float64, its last GroupNorm's scale drawn so the field is not zero),
3 samples, loss sum(logits^2): the relative gradient difference of each adjoint from torchdiffeq's
backpropagation, and of dia_ode's adjoint (batch steps, seminorm) from torchdiffeq's seminorm adjoint,
with the backward solves' evaluations.
"""

import torch

import dia_ode

f64 = torch.float64
torch.set_num_threads(1)


def odenet(**options):
    torch.manual_seed(0)
    model = dia_ode.create_model("odenet", in_channels=1, width=4, max_num_steps=5000, **options).to(f64)
    with torch.no_grad():
        model.block.dynamics.f.norm3.weight.normal_(0.0, 2.0)
    return model


torch.manual_seed(1)
x = torch.randn(3, 1, 8, 8, dtype=f64)
for tol in (1e-4, 1e-5, 1e-6):
    grads, cost = {}, {}
    for name, options in (("backprop", {}), ("torchdiffeq adjoint", {"adjoint": True, "adjoint_seminorm": True}),
                          ("dia_ode adjoint", {"adjoint": True, "backend": "dia_ode"})):
        model = odenet(rtol=tol, atol=tol, **options)
        model(x).square().sum().backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters()])
        cost[name] = model.block.stats["nfe_backward"]
    ref = grads["backprop"]
    rel = {k: float((g - ref).abs().max() / ref.abs().max()) for k, g in grads.items() if k != "backprop"}
    mutual = float((grads["dia_ode adjoint"] - grads["torchdiffeq adjoint"]).abs().max()
                   / grads["torchdiffeq adjoint"].abs().max())
    print(f"rtol {tol:g}: vs backprop torchdiffeq adjoint {rel['torchdiffeq adjoint']:.1e}, dia_ode adjoint "
          f"{rel['dia_ode adjoint']:.1e}; between the adjoints {mutual:.1e}; backward evaluations torchdiffeq "
          f"{cost['torchdiffeq adjoint']:.0f}, dia_ode {cost['dia_ode adjoint']:.0f}")
