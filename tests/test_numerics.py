"""The controller lab's numerics (dia_ode/numerics): tableaux, convergence orders, the controllers'
formulas, per-sample control, result codes, dense output and Hairer's stiffness test."""

import dataclasses
import functools
import math

import numpy as np
import pytest
import torch
import torchdiffeq

from dia_ode.numerics import (DT_UNDERFLOW, MAX_STEPS, NON_FINITE, PID_PRESETS, SUCCESS, IController, Limits,
                              PIController, PIDController, batched, create_error_controller, get_tableau, list_methods,
                              solve)
from dia_ode.numerics.tableaux import tableau_polynomial
from dia_ode.stiffness.problems import get_problem

f64 = torch.float64


def _decay(t, y):
    return -y


# ---- tableaux ---------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _rooted_trees(order: int) -> tuple[tuple, ...]:
    """The rooted trees with `order` vertices, each as the sorted tuple of its root's subtrees (the
    single vertex is ()). A root with subtrees of orders n_1 >= n_2 >= ... sums to order - 1: each
    partition of order - 1, then each sorted choice of trees of those orders."""
    if order == 1:
        return ((),)

    def partitions(n: int, largest: int):
        if n == 0:
            yield ()
        for first in range(min(n, largest), 0, -1):
            for rest in partitions(n - first, first):
                yield (first, *rest)

    def forests(sizes: tuple[int, ...]):
        if not sizes:
            yield ()
            return
        for tree in _rooted_trees(sizes[0]):
            for rest in forests(sizes[1:]):
                yield (tree, *rest)

    return tuple(sorted({tuple(sorted(forest)) for p in partitions(order - 1, order - 1) for forest in forests(p)}))


def _density(tree: tuple) -> int:
    """gamma(t) = |t| * prod gamma(subtrees): the order condition of t is b . Phi(t) = 1 / gamma(t)."""
    return math.prod((_density(sub) for sub in tree), start=1 + sum(_size(sub) for sub in tree))


def _size(tree: tuple) -> int:
    return 1 + sum(_size(sub) for sub in tree)


def _elementary_weight(a: np.ndarray, tree: tuple) -> np.ndarray:
    """Phi(t) per stage (s,): 1 for the single vertex, prod over the root's subtrees u of (A Phi(u))."""
    return math.prod((a @ _elementary_weight(a, sub) for sub in tree), start=np.ones(len(a)))


def _order_residuals(a: np.ndarray, b: np.ndarray, order: int) -> np.ndarray:
    """b . Phi(t) - 1 / gamma(t) over the rooted trees of exactly `order` vertices (Butcher; Hairer,
    Norsett & Wanner I, II.2): a method has order p when these vanish for every order <= p."""
    return np.array([b @ _elementary_weight(a, t) - 1 / _density(t) for t in _rooted_trees(order)])


def _order_conditions(a: np.ndarray, b: np.ndarray, order: int) -> np.ndarray:
    """The residuals of every tree up to `order` (1 + 1 + 2 + 4 + 9 = 17 trees for order 5)."""
    return np.concatenate([_order_residuals(a, b, q) for q in range(1, order + 1)])


@pytest.mark.parametrize("name", list_methods())
def test_every_tableau_meets_its_order_conditions_and_its_embedded_one_its_own(name):
    t = get_tableau(name)
    assert np.allclose(_order_conditions(t.a, t.b, t.order), 0, atol=1e-12)
    assert np.allclose(t.c, t.a.sum(axis=1)) and np.all(np.triu(t.a) == 0)
    if t.adaptive:
        b_hat = t.b - t.b_error
        assert np.allclose(_order_conditions(t.a, b_hat, t.error_order), 0, atol=1e-12)
        assert np.abs(_order_residuals(t.a, b_hat, t.error_order + 1)).max() > 1e-6  # and not one order more
    if t.fsal:
        assert np.allclose(t.a[-1], t.b)  # the last stage is f at the new solution


def test_the_rooted_trees_up_to_order_5_are_butchers_17_with_their_densities():
    assert [len(_rooted_trees(q)) for q in range(1, 7)] == [1, 1, 2, 4, 9, 20]
    assert sorted(map(_density, _rooted_trees(4))) == [4, 8, 12, 24]
    # order 5: c^4, c^2 Ac, c Ac^2, (Ac)^2, c AAc, Ac^3, A(c Ac), AAc^2, AAAc (Hairer, Norsett & Wanner I, II.2)
    assert sorted(map(_density, _rooted_trees(5))) == [5, 10, 15, 20, 20, 30, 40, 60, 120]
    assert all(_size(t) == q for q in range(1, 7) for t in _rooted_trees(q))


@pytest.mark.parametrize("name, atol", [("dopri5", 1e-14), ("tsit5", 1e-13)])
def test_dopri5_and_tsit5_meet_all_17_fifth_order_conditions_their_embedded_solutions_only_those_up_to_4(name, atol):
    """dopri5's coefficients are exact fractions (residuals measured <= 2.8e-16); tsit5's are the paper's
    16-digit floats (residuals <= 1.4e-14)."""
    t = get_tableau(name)
    b_hat = t.b - t.b_error
    residuals = _order_conditions(t.a, t.b, 5)
    assert len(residuals) == 17 and np.abs(residuals).max() <= atol, residuals
    assert np.abs(_order_residuals(t.a, t.b, 6)).max() > 1e-5  # order exactly 5 (measured 2.8e-4, 2.2e-4)
    assert np.abs(_order_conditions(t.a, b_hat, 4)).max() <= atol  # the 8 trees of orders 1-4
    assert np.abs(_order_residuals(t.a, b_hat, 5)).max() > 1e-4  # and not all 9 of order 5 (8.1e-4, 8.7e-4)


def test_dopri5_and_bosh3_are_torchdiffeqs_tables_and_dopri5s_error_estimate_is_3_2_of_torchdiffeqs():
    from torchdiffeq._impl.bosh3 import _BOGACKI_SHAMPINE_TABLEAU as bosh3
    from torchdiffeq._impl.dopri5 import _DORMAND_PRINCE_SHAMPINE_TABLEAU as dopri5

    for ours, theirs in ((get_tableau("dopri5"), dopri5), (get_tableau("bosh3"), bosh3)):
        assert np.allclose(ours.b, theirs.c_sol.numpy()) and np.allclose(ours.c[1:], theirs.alpha.numpy())
    # torchdiffeq's dopri5 embeds Shampine's 4th-order solution: its error estimate is 2/3 of Hairer's
    assert np.allclose(dopri5.c_error.numpy(), get_tableau("dopri5").b_error * 2 / 3)
    assert np.allclose(bosh3.c_error.numpy(), get_tableau("bosh3").b_error)


@pytest.mark.parametrize("name, module, table", [("fehlberg2", "fehlberg2", "_FEHLBERG2_TABLEAU"),
                                                  ("adaptive_heun", "adaptive_heun", "_ADAPTIVE_HEUN_TABLEAU")])
def test_the_low_order_pairs_are_torchdiffeqs_tables(name, module, table):
    theirs = getattr(__import__(f"torchdiffeq._impl.{module}", fromlist=[table]), table)
    ours = get_tableau(name)
    assert np.allclose(ours.b, theirs.c_sol.numpy()) and np.allclose(ours.c[1:], theirs.alpha.numpy())
    for i, row in enumerate(theirs.beta, start=1):
        assert np.allclose(ours.a[i, :i], row.numpy())
    assert np.allclose(np.abs(ours.b_error), np.abs(theirs.c_error.numpy()))  # b - b_hat; signs differ by method


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun2", "heun3", "rk4"])
def test_one_fixed_step_from_the_table_is_torchdiffeqs_step(name):
    """y_1 = y_0 + h sum_i b_i k_i, k_i = f(t_0 + c_i h, y_0 + h sum_j a_ij k_j), against torchdiffeq's step
    on y' = -t y^2 + sin y. torchdiffeq's rk4 is Kutta's 3/8 rule, the table's the classic method: both
    have order 4, so their steps agree to O(h^5) only."""
    t = get_tableau(name)
    f = lambda t_, y: -t_ * y ** 2 + torch.sin(y)  # noqa: E731
    t0, h, y0 = 0.3, 0.1, torch.tensor([0.7, -1.2], dtype=f64)
    ks = []
    for i in range(t.stages):
        ks.append(f(t0 + t.c[i] * h, y0 + h * sum(t.a[i, j] * ks[j] for j in range(i))))
    ours = y0 + h * sum(t.b[i] * ks[i] for i in range(t.stages))
    theirs = torchdiffeq.odeint(f, y0, torch.tensor([t0, t0 + h], dtype=f64), method=name,
                                options={"step_size": h})[-1]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=h ** 5 if name == "rk4" else 1e-15)
    if name == "rk4":
        assert not torch.equal(ours, theirs)


def test_the_real_stability_limits_are_the_known_ones():
    assert get_tableau("euler").real_stability_limit == pytest.approx(2.0)
    # to 4 decimals (2.785294, 2.512745, 3.306568, 3.506847), the figures theory/controllers.md quotes
    limits = {name: round(get_tableau(name).real_stability_limit, 4) for name in ("rk4", "bosh3", "dopri5", "tsit5")}
    assert limits == {"rk4": 2.7853, "bosh3": 2.5127, "dopri5": 3.3066, "tsit5": 3.5068}
    for name in ("dopri5", "tsit5"):  # order 5: R(z) = sum_{j<=5} z^j / j! + c_6 z^6 (7 stages, b_7 = 0)
        coefficients = tableau_polynomial(get_tableau(name).a, get_tableau(name).b)
        assert len(coefficients) == 7 and np.allclose(coefficients[:6], [1 / math.factorial(j) for j in range(6)])
    assert tableau_polynomial(get_tableau("dopri5").a, get_tableau("dopri5").b)[6] == pytest.approx(1 / 600)
    assert tableau_polynomial(get_tableau("tsit5").a, get_tableau("tsit5").b)[6] == pytest.approx(0.0014322, abs=1e-7)


# ---- convergence and dense output ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_methods())
def test_fixed_steps_converge_at_the_methods_order_on_decay(name):
    order = get_tableau(name).order
    y0 = torch.ones(1, 1, dtype=f64)
    errors = [abs(float(solve(_decay, y0, 0.0, 1.0, method=name, step_size=h).y[0, -1, 0]) - math.exp(-1))
              for h in (0.05, 0.025)]
    assert math.log2(errors[0] / errors[1]) == pytest.approx(order, abs=0.2)


def test_dense_output_of_dopri5_is_accurate_between_steps():
    vdp = get_problem("vdp", mu=1.0)
    times = torch.linspace(0.0, 5.0, 21, dtype=f64)
    ref = vdp.reference(times.numpy(), rtol=1e-13, atol=1e-13)
    errors = {}
    for tol in (1e-6, 1e-9):
        sol = solve(batched(vdp.f), vdp.y0[None], 0.0, 5.0, rtol=tol, atol=tol, t_eval=times)
        errors[tol] = float(np.abs(sol.y[0].numpy() - ref).max())
        assert errors[tol] < 20 * tol
    assert errors[1e-9] < errors[1e-6] / 100


@pytest.mark.parametrize("name, t1", [("lorenz", 2.0), ("brusselator", 8.0)])
def test_the_non_stiff_problems_are_solved_to_their_reference(name, t1):
    problem = get_problem(name)
    times = torch.linspace(0.0, t1, 5, dtype=f64)
    sol = solve(batched(problem.f), problem.y0[None], 0.0, t1, controller=PIController(), rtol=1e-9, atol=1e-9,
                t_eval=times)
    ref = problem.reference(times.numpy(), rtol=1e-11, atol=1e-11)
    assert sol.messages() == ["success"] and np.abs(sol.y[0].numpy() - ref).max() < 1e-6
    assert int(sol.stats["num_stiff_steps"][0]) == 0


# ---- controllers -----------------------------------------------------------------------------------------

def test_the_i_controller_like_torchdiffeqs_reproduces_its_accepted_times():
    vdp = get_problem("vdp", mu=1.0)

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.accepted = []

        def forward(self, t, y):
            return batched(vdp.f)(t.expand(y.shape[0]), y)

        def callback_accept_step(self, t0, y0, dt):
            self.accepted.append(float(t0 + dt))

    field = Field()
    torchdiffeq.odeint(field, vdp.y0[None], torch.tensor([0.0, 5.0], dtype=f64), rtol=1e-7, atol=1e-9,
                       method="dopri5")
    shampine = dataclasses.replace(get_tableau("dopri5"), b_error=get_tableau("dopri5").b_error * 2 / 3)
    sol = solve(batched(vdp.f), vdp.y0[None], 0.0, 5.0, method=shampine, controller=IController(), rtol=1e-7,
                atol=1e-9, trace=True)
    steps = sol.trace.of(0)
    ours = (steps["t"] + steps["h"])[steps["accepted"]].numpy()
    theirs = np.array(field.accepted)
    inner = theirs[theirs < 5.0]  # torchdiffeq steps past t1 and interpolates; we end on t1
    assert len(inner) > 20 and ours[-1] == 5.0
    np.testing.assert_allclose(ours[:len(inner)], inner, rtol=0, atol=1e-10)


def test_pi_controller_follows_hairers_formula_step_by_step():
    pi, k = PIController(), 5
    alpha, beta = 1 / k - 0.75 * 0.04, 0.04
    state = pi.init(1)
    sequence = [0.5, 2.0, 0.3, 0.8]  # accept, reject, accept (right after a rejection), accept
    expected_old, rejected = 1e-4, False
    for e in sequence:
        accept, factor, state = pi.adapt(state, torch.ones(1, dtype=f64), torch.tensor([e], dtype=f64), k)
        if e <= 1:
            want = min(max(0.9 * e ** -alpha * expected_old ** beta, 0.2), 10.0)
            want = min(want, 1.0) if rejected else want
            expected_old, rejected = max(e, 1e-4), False
        else:
            want, rejected = max(0.9 * e ** -alpha, 0.2), True
        assert bool(accept) == (e <= 1) and float(factor) == pytest.approx(want, rel=1e-12)


def test_pid_h211pi_filters_the_last_two_accepted_errors():
    pid, k = PIDController("H211PI"), 5
    state = pid.init(1)
    h = torch.ones(1, dtype=f64)
    _, first, state = pid.adapt(state, h, torch.tensor([0.5], dtype=f64), k)
    assert float(first) == pytest.approx(0.9 * 0.5 ** (-1 / 30) * 1.0 ** (-1 / 30))
    _, second, state = pid.adapt(state, 2 * h, torch.tensor([0.25], dtype=f64), k)
    assert float(second) == pytest.approx(0.9 * 0.25 ** (-1 / 30) * 0.5 ** (-1 / 30))
    accept, reject, after = pid.adapt(state, 2 * h, torch.tensor([4.0], dtype=f64), k)
    assert not bool(accept) and float(reject) == pytest.approx(0.9 * 4.0 ** (-1 / 5))
    assert torch.equal(after["e1"], state["e1"])  # a rejection leaves the filter's history
    with pytest.raises(ValueError, match="unknown PID preset 'H999'"):
        PIDController("H999")
    assert {"H211PI", "H312PID", "H211b", "H312b"} <= set(PID_PRESETS)


def test_every_controller_meets_the_tolerance_on_van_der_pol():
    vdp = get_problem("vdp", mu=1.0)
    ref = vdp.reference([5.0], rtol=1e-13, atol=1e-13)[0]
    for controller in (create_error_controller("i"), create_error_controller("pi"),
                       *(create_error_controller("pid", preset=p) for p in ("H211PI", "H312PID", "H211b"))):
        sol = solve(batched(vdp.f), vdp.y0[None], 0.0, 5.0, controller=controller, rtol=1e-8, atol=1e-8)
        assert sol.messages() == ["success"]
        assert np.abs(sol.y[0, -1].numpy() - ref).max() < 1e-6, controller.name


# ---- per-sample control and result codes -----------------------------------------------------------------

def test_each_sample_takes_its_own_steps_a_stiff_neighbour_costs_the_easy_one_nothing():
    rates = torch.tensor([[1.0], [1000.0]], dtype=f64)
    both = solve(lambda t, y, rate: -rate * y, torch.ones(2, 1, dtype=f64), 0.0, 1.0, args=rates, trace=True)
    alone = solve(_decay, torch.ones(1, 1, dtype=f64), 0.0, 1.0, trace=True)
    for key in ("nfe", "num_steps", "num_accepted", "num_rejected"):
        assert int(both.stats[key][0]) == int(alone.stats[key][0])
    assert torch.equal(both.trace.of(0)["t"], alone.trace.of(0)["t"])
    assert int(both.stats["nfe"][1]) > 20 * int(both.stats["nfe"][0])
    assert torch.allclose(both.y[:, -1, 0], torch.exp(-rates[:, 0]), atol=1e-5)


def test_failures_are_result_codes_never_exceptions():
    y0 = torch.ones(3, 1, dtype=f64)
    budget = solve(_decay, y0, 0.0, 100.0, max_steps=3)
    assert budget.result.tolist() == [MAX_STEPS] * 3 and budget.messages()[0] == "max steps reached"

    def blows_up(t, y, fragile):  # NaN from t = 0.5 on for the fragile sample (args travel with the rows)
        bad = (t > 0.5) & fragile[:, 0]
        return torch.where(bad[:, None], torch.full_like(y, math.nan), -y)

    sol = solve(blows_up, torch.ones(2, 1, dtype=f64), 0.0, 1.0, controller=IController(Limits(dt_min=1e-3)),
                args=torch.tensor([[False], [True]]))
    assert sol.result[0] == SUCCESS and sol.result[1] in (DT_UNDERFLOW, NON_FINITE)
    assert torch.isnan(sol.y[1, -1]).all() and torch.isfinite(sol.y[0, -1]).all()
    nan_start = solve(lambda t, y: y * math.nan, y0, 0.0, 1.0)
    assert nan_start.result.tolist() == [NON_FINITE] * 3


@pytest.mark.parametrize("kwargs, words", [
    ({"t1": 0.0}, "t1 must be > t0"), ({"rtol": 0.0}, "rtol and atol"), ({"method": "euler"}, "give step_size"),
    ({"method": "nope"}, "unknown method 'nope'"), ({"t_eval": torch.tensor([0.5, 0.2])}, "t_eval"),
])
def test_bad_arguments_are_value_errors_naming_them(kwargs, words):
    args = {"t1": 1.0, **kwargs}
    t1 = args.pop("t1")
    with pytest.raises(ValueError, match=words):
        solve(_decay, torch.ones(1, 1, dtype=f64), 0.0, t1, **args)


# ---- stiffness -------------------------------------------------------------------------------------------

def test_hairers_test_flags_stiff_van_der_pol_and_never_the_mild_one():
    stiff, mild = get_problem("vdp", mu=100.0), get_problem("vdp", mu=1.0)
    s = solve(batched(stiff.f), stiff.y0[None], 0.0, 30.0, controller=PIController(), trace=True)
    m = solve(batched(mild.f), mild.y0[None], 0.0, 20.0, controller=PIController(), trace=True)
    assert s.messages() == m.messages() == ["success"]
    # theory/controllers.md's ">95%", measured 0.988 stiff (StiffnessTest.limited), 0.972 flagged, 0.976 at the bound
    assert float(s.per_accepted("num_stiff_steps")[0]) >= 0.95
    assert float(s.per_accepted("num_flagged_steps")[0]) >= 0.95
    assert int(m.stats["num_stiff_steps"][0]) == int(m.stats["num_flagged_steps"][0]) == 0
    steps = s.trace.of(0)
    h_lambda = steps["h_lambda"][steps["accepted"]]
    # a stability-limited step: h * lambda sits at dopri5's bound on the real axis, 3.3066, within 2%
    bound = get_tableau("dopri5").real_stability_limit
    assert float(torch.nanmedian(h_lambda)) == pytest.approx(bound, rel=0.02)
    assert float(((h_lambda - bound).abs() <= 0.02 * bound).double().mean()) >= 0.95
    assert torch.isnan(steps["h_lambda"][~steps["accepted"]]).all()


def test_hairers_test_flags_van_der_pol_mu_1000_on_95_percent_of_its_steps():
    """theory/controllers.md's mu = 1000 run ([0, 30], 99.8% flagged, 44 s) on its first 3 time units
    (2 s): measured 0.991 stiff and 0.979 flagged over 1824 accepted steps, the streak's first 15 included."""
    vdp = get_problem("vdp", mu=1000.0)
    s = solve(vdp.f, vdp.y0[None], 0.0, 3.0, controller=PIController(), rtol=1e-6, atol=1e-6)
    assert s.messages() == ["success"] and int(s.stats["num_accepted"][0]) > 1000
    assert float(s.per_accepted("num_stiff_steps")[0]) >= 0.95
    assert float(s.per_accepted("num_flagged_steps")[0]) >= 0.95


def test_the_stiff_fraction_means_the_same_for_every_controller_the_streak_flag_does_not():
    vdp = get_problem("vdp", mu=100.0)
    solves = {name: solve(vdp.f, vdp.y0[None], 0.0, 30.0, controller=controller, rtol=1e-4, atol=1e-4)
              for name, controller in (("i", IController()), ("pi", PIController()),
                                       ("H312PID", PIDController("H312PID")))}
    stiff = {name: int(s.stats["num_stiff_steps"][0]) / int(s.stats["num_accepted"][0]) for name, s in solves.items()}
    # measured 0.996 (I, PI) and 0.991 (H312PID): each step judged alone, whatever the controller's swing
    assert all(fraction > 0.97 for fraction in stiff.values()), stiff
    assert stiff["H312PID"] == pytest.approx(stiff["pi"], abs=0.02)
    assert float(solves["H312PID"].per_accepted("num_stiff_steps")[0]) == stiff["H312PID"]
    # the streak flag: up on 98% of PI's steps; H312PID's swings (5 marks, then 6 unmarked steps) keep it down
    flagged = {name: float(s.per_accepted("num_flagged_steps")[0]) for name, s in solves.items()}
    assert flagged["pi"] > 0.95 and flagged["i"] > 0.95 and flagged["H312PID"] == 0.0, flagged


# ---- the stiff switch (Rosenbrock methods) ---------------------------------------------------------------

def _vdp1(y):
    return torch.stack([y[:, 1], (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]], dim=-1)


@functools.lru_cache(maxsize=None)
def _vdp1_reference(t1: float) -> np.ndarray:
    from scipy.integrate import solve_ivp
    return solve_ivp(lambda t, y: [y[1], (1 - y[0] ** 2) * y[1] - y[0]], (0.0, t1), [2.0, 0.0], method="DOP853",
                     rtol=1e-13, atol=1e-14, dense_output=True).sol


@pytest.mark.parametrize("name, order", [("ros2", 2), ("rodas3", 3), ("rodas4", 4)])
def test_rosenbrock_methods_have_their_order_an_error_estimate_one_lower_and_l_stability(name, order):
    from dia_ode.numerics.rosenbrock import get_rosenbrock, rosenbrock_step

    method = get_rosenbrock(name)
    field = lambda alpha, y: _vdp1(y)  # noqa: E731 -- autonomous
    y0 = torch.tensor([[2.0, 0.0]], dtype=f64)
    errors = []
    for n in (20, 40):  # global error on Van der Pol (mu = 1), [0, 1]: nonlinear, so every order condition counts
        y = y0
        for _ in range(n):
            y = rosenbrock_step(method, field, y, _vdp1(y), torch.tensor([1.0 / n], dtype=f64))["y_new"]
        errors.append(np.abs(y[0].numpy() - _vdp1_reference(1.0)(1.0)).max())
    assert math.log2(errors[0] / errors[1]) == pytest.approx(order, abs=0.25)
    local = [float(rosenbrock_step(method, field, y0, _vdp1(y0), torch.tensor([h], dtype=f64))["error"].abs().max())
             for h in (0.02, 0.01)]
    assert math.log2(local[0] / local[1]) == pytest.approx(method.error_order + 1, abs=0.25)
    stiff = lambda alpha, y: -1e8 * y  # noqa: E731
    one = torch.ones(1, 1, dtype=f64)
    assert abs(float(rosenbrock_step(method, stiff, one, stiff(0, one), torch.tensor([1.0], dtype=f64))["y_new"])) < 1e-6


def _rosenbrock_stability(method, z: np.ndarray, weights: tuple[float, ...] | None = None) -> np.ndarray:
    """R(z) from the coefficients of the transformed form (numerics/rosenbrock.py), z (N,) complex: on
    y' = lam y with y_n = 1, J = lam and z = h lam, stage i reads (1/gamma - z) K_i = z (1 + sum_j a_ij K_j)
    + sum_j c_ij K_j, its f at the Y of the last stage that evaluates f (new_f), so
    ((1/gamma - z) I - z A - C) K = z 1 and R(z) = 1 + m^T K (weights m - e: the embedded solution's)."""
    s = method.stages
    a, c = np.zeros((s, s)), np.zeros((s, s))
    for i in range(s):
        evaluated = max(j for j in range(i + 1) if method.new_f[j])
        a[i, :len(method.a[evaluated])] = method.a[evaluated]
        c[i, :i] = method.c[i]
    m = np.array(method.m if weights is None else weights)
    return np.array([1 + m @ np.linalg.solve((1 / method.gamma - zz) * np.eye(s) - zz * a - c, zz * np.ones(s))
                     for zz in np.asarray(z, dtype=complex)])


@pytest.mark.parametrize("name", ["ros2", "rodas3", "rodas4"])
def test_rosenbrock_methods_are_a_stable_on_the_imaginary_axis_and_vanish_at_minus_infinity(name):
    """A-stability (|R(iy)| <= 1; R has its only pole at 1/gamma > 0, so by the maximum principle the whole
    left half-plane follows) and L-stability (R(z) -> 0 as z -> -inf, like C / z), from the coefficients,
    and the same R from rosenbrock_step itself: y' = i w y as the real rotation y' = [[0, -w], [w, 0]] y,
    whose step multiplies y_1 + i y_2 by R(i w h), and y' = lam y on the real axis."""
    from dia_ode.numerics.rosenbrock import get_rosenbrock, rosenbrock_step

    method = get_rosenbrock(name)
    y = np.concatenate([np.linspace(0.0, 20.0, 401), np.logspace(1.31, 8.0, 300)])
    r_iy = _rosenbrock_stability(method, 1j * y)
    assert np.abs(r_iy).max() <= 1 + 1e-12
    w = torch.tensor(y, dtype=f64)
    rotation = lambda alpha, v: torch.stack([-w * v[:, 1], w * v[:, 0]], dim=-1)  # noqa: E731
    start = torch.tensor([[1.0, 0.0]], dtype=f64).repeat(len(y), 1)
    stepped = rosenbrock_step(method, rotation, start, rotation(0, start), torch.ones(len(y), dtype=f64))["y_new"]
    np.testing.assert_allclose(stepped[:, 0].numpy() + 1j * stepped[:, 1].numpy(), r_iy, rtol=0, atol=1e-13)
    lam = torch.tensor(-np.logspace(-3.0, 8.0, 45), dtype=f64)
    decay = lambda alpha, v: lam[:, None] * v  # noqa: E731
    ones = torch.ones(len(lam), 1, dtype=f64)
    stepped = rosenbrock_step(method, decay, ones, decay(0, ones), torch.ones(len(lam), dtype=f64))["y_new"][:, 0]
    np.testing.assert_allclose(stepped.numpy(), _rosenbrock_stability(method, lam.numpy()).real, rtol=0, atol=1e-13)
    far = np.abs(_rosenbrock_stability(method, np.array([-1e6, -1e8])))
    assert far[1] < 1e-6 and far[1] == pytest.approx(far[0] / 100, rel=0.01)  # R(-x) ~ C / x: R(-inf) = 0
    grid = np.logspace(-2.0, 6.0, 40)[:, None] * np.exp(1j * np.linspace(np.pi / 2, 3 * np.pi / 2, 41))
    assert np.abs(_rosenbrock_stability(method, grid.ravel())).max() <= 1 + 1e-12  # a check of the principle


def test_rodas4s_continuous_extension_is_third_order_and_exact_at_the_ends():
    from dia_ode.numerics.rosenbrock import RODAS4, rosenbrock_dense, rosenbrock_step

    y0 = torch.tensor([[2.0, 0.0]], dtype=f64)
    errors = []
    for h in (0.05, 0.025):
        step = rosenbrock_step(RODAS4, lambda alpha, y: _vdp1(y), y0, _vdp1(y0), torch.tensor([h], dtype=f64))
        theta = torch.tensor([[0.0, 0.5, 1.0]], dtype=f64)
        values = rosenbrock_dense(theta, y0, step["y_new"], step["dense"])[0]
        assert torch.equal(values[0], y0[0]) and torch.allclose(values[2], step["y_new"][0], rtol=0, atol=1e-15)
        errors.append(np.abs(values[1].numpy() - _vdp1_reference(0.05)(0.5 * h)).max())
    assert math.log2(errors[0] / errors[1]) > 3.3  # local error O(h^4): an order-3 interpolant


def test_the_stiff_switch_moves_a_stiff_solve_to_rodas4_and_leaves_a_mild_one_explicit():
    robertson = get_problem("robertson")
    times = torch.tensor([0.0, 1.0, 10.0, 40.0], dtype=f64)
    sol = solve(robertson.f, robertson.y0[None], 0.0, 40.0, controller=PIController(), rtol=1e-4, atol=1e-8,
                t_eval=times, stiff_switch=True, trace=True)
    assert sol.messages() == ["success"]
    stats = {key: int(value[0]) for key, value in sol.stats.items()}
    assert stats["num_implicit_steps"] > 0.5 * stats["num_accepted"]
    assert stats["num_jacobians"] >= stats["num_implicit_steps"]  # one per implicit attempt, rejected ones too
    assert stats["num_linear_solves"] == 6 * stats["num_jacobians"]  # one LU, six stage solves per RODAS4 attempt
    assert set(sol.trace.method) == {"dopri5", "rodas4"} and sol.trace.method[0] == "dopri5"
    explicit_only = solve(robertson.f, robertson.y0[None], 0.0, 40.0, controller=PIController(), rtol=1e-4,
                          atol=1e-8, max_steps=3000)
    assert int(sol.stats["nfe"][0]) * 5 < int(explicit_only.stats["nfe"][0])  # or it ran out of steps first
    mild = get_problem("brusselator")
    calm = solve(mild.f, mild.y0[None], 0.0, 20.0, controller=PIController(), stiff_switch=True, trace=True)
    assert int(calm.stats["num_implicit_steps"][0]) == 0 and set(calm.trace.method) == {"dopri5"}
    with pytest.raises(ValueError, match="stiff_switch"):
        solve(_decay, torch.ones(1, 1, dtype=f64), 0.0, 1.0, method="rk4", step_size=0.1, stiff_switch=True)
    with pytest.raises(ValueError, match="unknown stiff method 'bdf'"):
        solve(_decay, torch.ones(1, 1, dtype=f64), 0.0, 1.0, stiff_switch=True, stiff_method="bdf")


def test_hairers_estimate_matches_the_exact_local_spectral_radius_on_a_stiff_solve():
    linear = get_problem("linear", eigenvalues=[-1.0, -1000.0])
    sol = solve(linear.f, linear.y0[None], 0.0, 5.0, controller=PIController(), trace=True, exact_spectrum=True)
    acc = sol.trace.accepted
    torch.testing.assert_close(sol.trace.h_rho[acc], 1000.0 * sol.trace.h[acc], rtol=1e-12, atol=0)
    assert torch.isnan(sol.trace.h_rho[~acc]).all()
    vdp = get_problem("vdp", mu=1000.0)
    sol = solve(vdp.f, vdp.y0[None], 0.0, 1.0, controller=PIController(), trace=True, exact_spectrum=True)
    acc = sol.trace.accepted
    ratio = sol.trace.h_lambda[acc] / sol.trace.h_rho[acc]  # a Rayleigh-like quotient over the radius
    ratio = ratio[torch.isfinite(ratio)]
    assert float(ratio.median()) == pytest.approx(1.0, abs=1e-3) and float(ratio.max()) <= 1.0 + 1e-9
    assert float(ratio.min()) > 0.85  # measured 0.89 (the transient at the start)
    plain = solve(vdp.f, vdp.y0[None], 0.0, 1.0, controller=PIController(), trace=True)
    assert torch.isnan(plain.trace.h_rho).all() and torch.equal(plain.y, sol.y)  # watching changes no step


@pytest.mark.parametrize("coupling", [3_000.0, 30_000.0])
def test_hairers_estimate_can_exceed_the_spectral_radius_of_a_non_normal_jacobian(coupling):
    # y' = A y, A = [[-1000, c], [0, -1]]: eigenvalues -1000 and -1, but ||A||_2 grows with c. The quotient
    # ||A v|| / ||v|| is bounded by the largest singular value, not by the spectral radius.
    A = torch.tensor([[-1000.0, coupling], [0.0, -1.0]], dtype=f64)
    sol = solve(lambda t, y: y @ A.T, torch.ones(1, 2, dtype=f64), 0.0, 5.0, controller=PIController(), trace=True,
                exact_spectrum=True)
    acc = sol.trace.accepted
    ratio = sol.trace.h_lambda[acc] / sol.trace.h_rho[acc]
    ratio = ratio[torch.isfinite(ratio)]
    assert float(ratio.max()) > 1.002  # above the radius on some steps
    bound = float(torch.linalg.matrix_norm(A, 2)) / 1000.0  # sigma_max / rho
    assert float(ratio.max()) <= bound


def test_the_stiffness_test_can_be_turned_off_for_throughput():
    vdp = get_problem("vdp", mu=1000.0)
    with_test = solve(vdp.f, vdp.y0[None], 0.0, 1.0, controller=PIController(), trace=True)
    without = solve(vdp.f, vdp.y0[None], 0.0, 1.0, controller=PIController(), trace=True, stiffness=False)
    assert int(with_test.stats["num_stiff_steps"][0]) > 0 and int(without.stats["num_stiff_steps"][0]) == 0
    assert torch.isnan(without.trace.h_lambda).all() and not without.trace.stiff.any()
    assert torch.equal(with_test.y, without.y)  # the steps are the same: the test only watches
    with pytest.raises(ValueError, match="stiff_switch needs the stiffness test"):
        solve(vdp.f, vdp.y0[None], 0.0, 1.0, stiff_switch=True, stiffness=False)


def test_the_stiff_switch_on_robertson_needs_at_most_twice_lsodas_evaluations_within_tolerance():
    """Issue 12's target, on evaluation counts (deterministic); HIRES is in `dia-ode bench stiff-switch`."""
    from dia_ode.studies.bench_stiff_switch import SwitchCase, bench_stiff_switch

    rows = {r["solver"]: r for r in bench_stiff_switch((SwitchCase("robertson", 40.0),), ("rodas4",), explicit=False)}
    ours, lsoda = rows["ours dopri5 + PI -> rodas4"], rows["scipy LSODA"]
    assert ours["result"] == "success"
    assert ours["nfe"] <= 2 * lsoda["nfe"], (ours["nfe"], lsoda["nfe"])
    assert ours["error"] <= 1.0  # within tolerance at every save time, RODAS4's own dense output between steps


# ---- the DIA controller ----------------------------------------------------------------------------------

def test_the_untrained_dia_controller_is_the_pi_controller():
    from dia_ode.numerics.dia_controller import DIAErrorController

    vdp = get_problem("vdp", mu=5.0)
    pi = solve(vdp.f, vdp.y0[None], 0.0, 10.0, controller=PIController(), trace=True)
    dia = solve(vdp.f, vdp.y0[None], 0.0, 10.0, controller=DIAErrorController(), trace=True)
    assert torch.equal(pi.stats["nfe"], dia.stats["nfe"]) and torch.equal(pi.trace.accepted, dia.trace.accepted)
    assert torch.equal(pi.trace.h, dia.trace.h)
    from dia_ode.attention import DIALSTMCell

    from dia_ode.numerics.dia_controller import FEATURES
    with pytest.raises(ValueError, match=f"{len(FEATURES)} channels"):
        DIAErrorController(DIALSTMCell(len(FEATURES) + 2))


def test_controllers_see_the_stiffness_estimate_and_the_dia_cell_reads_it():
    from dia_ode.attention import DIALSTMCell
    from dia_ode.numerics.dia_controller import FEATURES, DIAErrorController

    seen = []

    class Spy(PIController):
        def adapt(self, state, h, error_ratio, k, stiffness=None):
            seen.append(stiffness)
            return super().adapt(state, h, error_ratio, k, stiffness=stiffness)

    vdp = get_problem("vdp", mu=1000.0)
    solve(vdp.f, vdp.y0[None], 0.0, 0.5, controller=Spy())
    late = torch.cat(seen[len(seen) // 2:])
    assert late.median() == pytest.approx(1.0, abs=0.1)  # h * lambda at the threshold: a stability-limited step
    torch.manual_seed(0)
    dia = DIAErrorController(DIALSTMCell(len(FEATURES), reduction=1).double())  # a cell with nonzero weights
    state, h, e = dia.init(1), torch.full((1,), 0.01, dtype=f64), torch.full((1,), 0.5, dtype=f64)
    calm, stiff = (dia.adapt(state, h, e, 5, stiffness=torch.tensor([s], dtype=f64))[1] for s in (0.0, 2.0))
    assert not torch.allclose(calm, stiff)
    assert torch.equal(dia.adapt(state, h, e, 5)[1], calm)  # no estimate reads as 0


def test_training_keeps_the_best_point_and_the_saved_controller_loads_back(tmp_path):
    from dia_ode.numerics.dia_controller import DIAErrorController
    from dia_ode.rundir import CheckpointError, start_run
    from dia_ode.stiffness.families import VdpFamily
    from dia_ode.studies.dia_controller_training import (TRAIN_COMMAND, load_dia_controller, objective,
                                                         save_dia_controller, score, train_dia_controller)

    family = VdpFamily(1.0, 5.0, t1=3.0)
    training = train_dia_controller(family, members=2, iterations=2, population=2, seed=3)
    assert len(training.history) == 2
    mus = family.draw(2, 3)
    refs = family.references(mus)
    pi = score(PIController(), family, mus, refs, 1e-6, 1e-6)
    trained = objective(score(training.controller, family, mus, refs, 1e-6, 1e-6), pi, 1.0)
    untrained = objective(score(DIAErrorController(), family, mus, refs, 1e-6, 1e-6), pi, 1.0)
    assert training.initial == pytest.approx(1.0)  # the zero cell is PI: J = 1 on PI's own scale
    assert trained <= untrained and trained == training.history[-1]  # only measured improvements are taken
    assert training.history == sorted(training.history, reverse=True)
    run_dir = start_run(tmp_path, "controllers-train-dia", {"command": TRAIN_COMMAND})
    save_dia_controller(training.controller, run_dir)
    loaded = load_dia_controller(run_dir)
    for ours, theirs in zip(loaded.cell.parameters(), training.controller.cell.parameters()):
        assert torch.equal(ours, theirs)
    other = start_run(tmp_path, "integrate", {"command": "integrate"})
    with pytest.raises(CheckpointError, match="was written by 'integrate'"):
        load_dia_controller(other)
    (run_dir / "controller.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="does not hold a DIA controller"):
        load_dia_controller(run_dir)


def test_the_linear_family_is_stable_seeded_and_its_exact_reference_is_the_solution():
    from dia_ode.stiffness.families import LinearFamily

    family = LinearFamily(1.0, 1000.0, t1=0.5, dim=3)
    params = family.draw(4, seed=7)
    assert torch.equal(params, family.draw(4, seed=7)) and not torch.equal(params, family.draw(4, seed=8))
    rates = params[:, :3]
    assert bool(((rates >= 1.0) & (rates <= 1000.0)).all())
    eig = torch.linalg.eigvalsh(family.matrices(params))  # symmetric: real eigenvalues -rates
    torch.testing.assert_close(eig.sort(dim=1).values, (-rates).sort(dim=1).values)
    assert all(1.0 <= ratio <= 1000.0 for ratio in family.describe(params))
    reference = family.references(params)
    sol = solve(family.field, family.y0(4), 0.0, 0.5, controller=PIController(), rtol=1e-10, atol=1e-12,
                t_eval=family.times(), args=params)
    assert sol.success.all()
    np.testing.assert_allclose(sol.y.numpy(), reference, rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="rate"):
        LinearFamily(10.0, 1.0)
