"""I1 (experiments/README.md): does the split solver compute exactly what the old one did?

Solves seven problems (stiff switch, PID, exact spectrum, fixed steps, save times; three samples each, with
traces) and saves everything to the file named on the command line; run it once under each version and
compare the two files with `--compare OLD NEW`:

    git archive e20182f | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old python experiments/integrator/split_identity.py /tmp/old.pt
    python experiments/integrator/split_identity.py /tmp/new.pt
    python experiments/integrator/split_identity.py --compare /tmp/old.pt /tmp/new.pt
"""

import sys

import torch

import dia_ode.numerics as numerics
from dia_ode.numerics import solve
from dia_ode.stiffness import get_problem

# the error controllers' factory under either name (renamed in the same change)
make = getattr(numerics, "create_error_controller", None) or getattr(numerics, "create_controller")
CASES = [("vdp", {"mu": 1000.0}, 0.0, 3.0, dict(controller="pi")),
         ("vdp", {"mu": 5.0}, 0.0, 10.0, dict(controller="i", t_eval=torch.linspace(0, 10, 21))),
         ("robertson", {}, 0.0, 100.0, dict(controller="pi", stiff_switch=True)),
         ("hires", {}, 0.0, 50.0, dict(controller="pid", stiff_switch=True, stiff_method="ros2")),
         ("vdp", {"mu": 100.0}, 0.0, 5.0, dict(controller="pid", exact_spectrum=True)),
         ("vdp", {"mu": 2.0}, 0.0, 2.0, dict(method="rk4", step_size=0.01)),
         ("vdp", {"mu": 2.0}, 0.0, 2.0, dict(method="bosh3", controller="pi"))]
TRACE = ("sample", "t", "h", "error_ratio", "accepted", "h_lambda", "stiff", "h_rho")


def dump(path: str) -> None:
    torch.set_num_threads(1)
    out = {}
    for i, (name, params, t0, t1, options) in enumerate(CASES):
        problem = get_problem(name, **params)
        options = dict(options)
        if "controller" in options:
            options["controller"] = make(options["controller"])
        y0 = torch.stack([problem.y0, problem.y0 * 1.01, problem.y0 * 0.5])
        sol = solve(problem.f, y0, t0, t1, rtol=1e-5, atol=1e-7, trace=True, **options)
        out[i] = {"y": sol.y, "result": sol.result, "stats": {k: v for k, v in sol.stats.items()},
                  "trace": {k: getattr(sol.trace, k) for k in TRACE}, "method": sol.trace.method}
    torch.save(out, path)


def same(a, b, where: str) -> bool:
    if isinstance(a, dict):
        return all([same(a[k], b[k], f"{where}.{k}") for k in a])
    equal = a == b if isinstance(a, list) else (
        a.shape == b.shape and torch.equal(torch.nan_to_num(a.double(), nan=123.0), torch.nan_to_num(b.double(), nan=123.0)))
    if not equal:
        print("differs:", where)
    return equal


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        old, new = torch.load(sys.argv[2]), torch.load(sys.argv[3])
        print("bit-identical" if all([same(old[i], new[i], f"case {i}") for i in old]) else "not identical")
    else:
        dump(sys.argv[1])
