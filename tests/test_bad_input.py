"""What each kind of bad input gets: one test per case, the place to look it up.

Every case here once gave a traceback from inside JAX, diffrax or NumPy, misleading
advice, or a silently wrong number. Each test states the input and the error (type and
the argument its message names) that a user now gets instead. Where a run is needed the
oracle is a closed form (blow-up times of scalar flows, ``expm`` for quadratics).
"""

import diffrax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import given, settings, strategies as st

import gdflow as gf
from gdflow._flow import FlowError, gradient_flow
from gdflow._solvers._rkc import RKC2, rkc2_stability_bound, rkc2_stability_polynomial
from gdflow._spectrum import hessian_eigs, spectrum_along
from gdflow.splitting._switched import switched_flow
from gdflow.splitting._two_point import two_point_flow, two_point_flow_approx

P = gf.problems


@pytest.fixture
def bowl():
    return P.quadratic(jnp.diag(jnp.array([1.0, 2.0])), params0=jnp.ones(2))


def _scalar_problem(loss_of_theta, theta0=1.0):
    """A one-parameter problem with the given loss (data unused, one example)."""

    def loss(p, batch):
        return jnp.mean(loss_of_theta(p[0]) + 0.0 * batch["x"])

    return gf.Problem(loss, {"x": jnp.zeros(1)}, jnp.array([theta0]))


# --- gradient_flow: times -------------------------------------------------------------


def test_flow_t0_not_a_number(bowl):
    with pytest.raises(TypeError, match="`t0` must be a real number"):
        gradient_flow(bowl, 1.0, t0="a")


def test_flow_t0_none(bowl):
    with pytest.raises(TypeError, match="`t0`"):
        gradient_flow(bowl, 1.0, t0=None)


def test_flow_t1_bool_is_not_a_time(bowl):
    with pytest.raises(TypeError, match="`t1`"):
        gradient_flow(bowl, True)


def test_flow_t1_complex(bowl):
    with pytest.raises(TypeError, match="`t1`"):
        gradient_flow(bowl, 1j)


def test_flow_ts_not_numbers(bowl):
    with pytest.raises(TypeError, match="`ts`"):
        gradient_flow(bowl, 1.0, ts=["a", "b"])


def test_flow_ts_two_dimensional(bowl):
    with pytest.raises(ValueError, match="`ts` must be a 1-d array"):
        gradient_flow(bowl, 1.0, ts=[[0.0, 0.5], [0.7, 1.0]])


# --- gradient_flow: the start and the field -------------------------------------------


def test_flow_params0_wrong_shape(bowl):
    with pytest.raises(ValueError, match=r"`params0` must have the shape .*\(2,\).*\(3,\)"):
        gradient_flow(bowl, 1.0, params0=jnp.ones(3))


def test_flow_params0_wrong_structure(bowl):
    with pytest.raises(ValueError, match="`params0` must have the pytree structure"):
        gradient_flow(bowl, 1.0, params0={"a": jnp.ones(2)})


def test_flow_params0_integer(bowl):
    with pytest.raises(TypeError, match="`params0` must be floating point"):
        gradient_flow(bowl, 1.0, params0=jnp.ones(2, int))


def test_flow_params0_nan(bowl):
    with pytest.raises(ValueError, match="`params0` must be finite"):
        gradient_flow(bowl, 1.0, params0=jnp.array([np.nan, 1.0]))


def test_flow_field_wrong_shape(bowl):
    with pytest.raises(ValueError, match="`field` must return arrays shaped like"):
        gradient_flow(bowl, 1.0, field=lambda p, d: jnp.ones(3))


def test_flow_field_scalar_is_not_broadcast(bowl):
    with pytest.raises(ValueError, match="`field` must return arrays shaped like"):
        gradient_flow(bowl, 1.0, field=lambda p, d: jnp.sum(p))


def test_flow_field_wrong_structure(bowl):
    with pytest.raises(ValueError, match="`field` must return a tangent with the pytree"):
        gradient_flow(bowl, 1.0, field=lambda p, d: (p, p))


def test_flow_field_integer_output(bowl):
    with pytest.raises(TypeError, match="`field` must return floating-point"):
        gradient_flow(bowl, 1.0, field=lambda p, d: jnp.ones(2, int))


def test_flow_field_wrong_signature(bowl):
    with pytest.raises(ValueError, match=r"`field` failed when called as field\(params0, data\)"):
        gradient_flow(bowl, 1.0, field=lambda p: -p)


def test_flow_controller_not_a_controller(bowl):
    with pytest.raises(TypeError, match="`controller` must be a diffrax step-size controller"):
        gradient_flow(bowl, 1.0, controller=3)


# --- gradient_flow: tolerances a float32 state cannot reach ---------------------------


def test_flow_float32_unreachable_rtol_is_clamped_with_a_warning():
    # Measured (x64 off): rtol=1e-12 took 215,026 steps and ended 3.1e-7 off; clamped to
    # eps(float32) it takes ~100 steps. A float32 state behaves the same with x64 on.
    H = np.diag([1.0, 10.0])
    p32 = P.quadratic(jnp.asarray(H, jnp.float32), params0=jnp.ones(2, jnp.float32))
    with pytest.warns(RuntimeWarning, match="rtol=1e-12 is below the machine epsilon"):
        flow = gradient_flow(p32, 2.0, ts=[0.0, 2.0], rtol=1e-12, atol=1e-14)
    eps = float(np.finfo(np.float32).eps)
    assert flow.stats["rtol"] == pytest.approx(eps)
    assert flow.stats["num_steps"] < 1000 and flow.stats["num_rejected_steps"] == 0
    exact = sl.expm(-2.0 * H) @ np.ones(2)
    np.testing.assert_allclose(np.asarray(flow.final, np.float64), exact, atol=1e-6)


# --- gradient_flow: flows that blow up in finite time ---------------------------------


def test_flow_blowup_of_field_theta_squared_is_reported_as_blowup():
    # theta' = theta^2 from theta0 = 1: theta(t) = 1/(1 - t), blow-up at t = 1.
    problem = P.quadratic(jnp.eye(1), params0=jnp.ones(1))
    with pytest.raises(FlowError, match="blows up in finite time") as info:
        gradient_flow(problem, 2.0, field=lambda p, d: p**2)
    assert "max_steps" not in str(info.value).split("blows up")[0]
    part = info.value.trajectory
    ts = np.asarray(part.ts)
    assert 0.9 < ts[-1] <= 1.0
    np.testing.assert_allclose(np.asarray(part.params)[:, 0], 1.0 / (1.0 - ts), rtol=1e-4)


def test_flow_blowup_of_loss_minus_theta4_is_reported_as_blowup():
    # L = -theta^4: theta' = 4 theta^3, theta(t) = (1 - 8t)^(-1/2), blow-up at t = 1/8.
    problem = _scalar_problem(lambda th: -(th**4))
    with pytest.raises(FlowError, match="blows up in finite time") as info:
        gradient_flow(problem, 1.0)
    part = info.value.trajectory
    ts = np.asarray(part.ts)
    assert 0.1 <= ts[-1] <= 0.125
    np.testing.assert_allclose(np.asarray(part.params)[:, 0], (1 - 8 * ts) ** -0.5, rtol=1e-4)


def test_flow_blowup_with_own_controller_is_not_reported_as_max_steps():
    # A user's controller has no step floor: the solve spins to max_steps. The saved
    # states show the explosion, and the message says so instead of "raise max_steps".
    problem = P.quadratic(jnp.eye(1), params0=jnp.ones(1))
    controller = diffrax.PIDController(rtol=1e-6, atol=1e-9)
    with pytest.raises(FlowError, match="blows up in finite time") as info:
        gradient_flow(
            problem, 2.0, field=lambda p, d: p**2, controller=controller, max_steps=20_000
        )
    assert "Increase `max_steps`" not in str(info.value)
    assert np.asarray(info.value.trajectory.ts)[-1] <= 1.0


def test_flow_nonfinite_field_stops_early_and_says_so(bowl):
    # sqrt of a negative number: NaN from the first evaluation. Formerly 1,000,000 steps
    # and "reached max_steps"; now a stop within a few hundred steps naming the field.
    with pytest.raises(FlowError, match="field is not finite") as info:
        gradient_flow(bowl, 1.0, field=lambda p, d: jnp.sqrt(p - 2.0))
    assert "max_steps" not in str(info.value)
    assert info.value.trajectory.stats["num_steps"] < 1000


# --- hessian_eigs and spectrum_along --------------------------------------------------


def _sq(p):
    return jnp.sum(p**2)


def test_hessian_eigs_nan_params():
    with pytest.raises(ValueError, match="`params` must be finite"):
        hessian_eigs(_sq, jnp.array([np.nan, 1.0]))


def test_hessian_eigs_inf_params():
    with pytest.raises(ValueError, match="`params` must be finite"):
        hessian_eigs(_sq, jnp.array([np.inf, 1.0]))


def test_hessian_eigs_integer_loss():
    with pytest.raises(TypeError, match="must return a floating-point scalar"):
        hessian_eigs(lambda p: jnp.sum(p > 0).astype(int), jnp.ones(3))


def test_hessian_eigs_loss_not_scalar():
    with pytest.raises(ValueError, match="must return a scalar"):
        hessian_eigs(lambda p: p**2, jnp.ones(3))


def test_hessian_eigs_loss_fails_on_params():
    with pytest.raises(ValueError, match=r"loss\(params, \*args\) failed"):
        hessian_eigs(lambda p, A: jnp.sum(A @ p), jnp.ones(3), args=(jnp.ones((2, 2)),))


def test_hessian_eigs_args_not_a_tuple():
    # tuple(array) would pass the rows as separate arguments.
    with pytest.raises(TypeError, match="`args` must be a tuple"):
        hessian_eigs(lambda p, A: 0.5 * p @ A @ p, jnp.ones(3), args=jnp.eye(3))


def test_hessian_eigs_params_not_numbers():
    with pytest.raises(TypeError, match="`params`"):
        hessian_eigs(_sq, "ab")


def test_hessian_eigs_bad_key():
    with pytest.raises(TypeError, match="`key` must be a JAX PRNG key"):
        hessian_eigs(_sq, jnp.ones(3), key=3)


def test_hessian_eigs_v0_not_numbers():
    with pytest.raises(TypeError, match="`v0` must hold real numbers"):
        hessian_eigs(_sq, jnp.ones(3), v0="abc")


def test_spectrum_along_nonfinite_point(bowl):
    traj = gf.Trajectory(
        ts=jnp.arange(3.0),
        params=jnp.array([[1.0, 1.0], [np.nan, 1.0], [1.0, 1.0]]),
        loss=jnp.zeros(3),
        method="gd",
    )
    with pytest.raises(ValueError, match="`traj` holds a non-finite point at index 1"):
        spectrum_along(bowl.loss, traj, args=(bowl.data,))


def test_spectrum_along_integer_loss(bowl):
    traj = gf.gd(bowl, 0.1, 2)
    with pytest.raises(TypeError, match="must return a floating-point scalar"):
        spectrum_along(lambda p, d: jnp.sum(p > 0).astype(int), traj, args=(bowl.data,))


def test_spectrum_along_loss_not_scalar(bowl):
    traj = gf.gd(bowl, 0.1, 2)
    with pytest.raises(ValueError, match="must return a scalar"):
        spectrum_along(lambda p, d: p, traj, args=(bowl.data,))


def test_spectrum_along_unknown_option(bowl):
    traj = gf.gd(bowl, 0.1, 2)
    with pytest.raises(TypeError, match="spectrum_along got unknown keyword"):
        spectrum_along(bowl.loss, traj, args=(bowl.data,), foo=1)


# --- RKC2 ----------------------------------------------------------------------------


def test_rkc2_safety_not_a_number():
    with pytest.raises(TypeError, match="`safety` must be a real number"):
        RKC2(safety="a")


def test_rkc2_spectral_radius_not_a_number():
    with pytest.raises(TypeError, match="`spectral_radius`"):
        RKC2(spectral_radius="a")


def test_rkc2_stability_bound_fractional_stages():
    with pytest.raises(TypeError, match="`s` must be an integer"):
        rkc2_stability_bound(2.5)


def test_rkc2_stability_polynomial_z_not_numbers():
    with pytest.raises(TypeError, match="`z` must hold real numbers"):
        rkc2_stability_polynomial(3, "a")


# --- two_point_flow -------------------------------------------------------------------


def test_two_point_flow_negative_time():
    with pytest.raises(ValueError, match="`t` must be >= 0"):
        two_point_flow(-1.0, 1.0, 0.0, 2.0, 0.5)


def test_two_point_flow_nonfinite_time():
    for t in (np.nan, np.inf):
        with pytest.raises(ValueError, match="`t` must be finite"):
            two_point_flow(t, 1.0, 0.0, 2.0, 0.5)


def test_two_point_flow_approx_negative_time():
    with pytest.raises(ValueError, match="`t` must be >= 0"):
        two_point_flow_approx(np.array([0.0, -1.0]), 1.0, 0.0, 2.0, 0.5)


def test_two_point_flow_nan_example():
    with pytest.raises(ValueError, match="`a` must be finite"):
        two_point_flow(1.0, np.nan, 0.0, 2.0, 0.5)


def test_two_point_flow_approx_corrected_not_bool():
    with pytest.raises(TypeError, match="`corrected`"):
        two_point_flow_approx(1.0, 1.0, 0.0, 2.0, 0.5, corrected="no")


# --- switched_flow (its input checks) -------------------------------------------------


def test_switched_flow_ts_unsorted(bowl):
    with pytest.raises(ValueError, match="`ts` must be non-decreasing"):
        switched_flow(bowl, 0.1, 1.0, gf.RoundRobin(1), ts=[0.5, 0.2])


def test_switched_flow_ts_not_numbers(bowl):
    with pytest.raises(TypeError, match="`ts`"):
        switched_flow(bowl, 0.1, 1.0, gf.RoundRobin(1), ts=["a"])


# --- problems -------------------------------------------------------------------------


def test_logistic_nan_in_X():
    X = np.array([[np.nan, 1.0], [1.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match=r"`X` must be finite.*index \(0, 0\)"):
        P.logistic(X, [0, 1, 1])


def test_logistic_complex_X():
    with pytest.raises(TypeError, match="`X` must hold real numbers"):
        P.logistic(np.ones((3, 2)) * 1j, [0, 1, 1])


def test_logistic_string_X():
    with pytest.raises(TypeError, match="`X` must hold real numbers"):
        P.logistic(np.array([["a", "b"]] * 3), [0, 1, 1])


def test_logistic_no_examples():
    with pytest.raises(ValueError, match="`X` must have at least one example"):
        P.logistic(np.ones((0, 2)), np.zeros(0))


def test_least_squares_nan_in_y():
    with pytest.raises(ValueError, match="`y` must be finite"):
        P.least_squares(np.ones((2, 2)), [np.nan, 1.0])


def test_least_squares_string_y():
    with pytest.raises(TypeError, match="`y` must hold real numbers"):
        P.least_squares(np.ones((2, 2)), ["a", "b"])


def test_softmax_negative_label():
    # jax.nn.one_hot turns -1 into an all-zero row: a silently wrong loss.
    with pytest.raises(ValueError, match="`Y` must hold class labels in 0..1"):
        P.softmax(np.ones((3, 2)), jnp.array([0, 1, -1]))


def test_softmax_label_beyond_num_classes():
    with pytest.raises(ValueError, match=r"`Y` must hold class labels in 0..2 \(num_classes=3\)"):
        P.softmax(np.ones((3, 2)), jnp.array([0, 1, 5]), num_classes=3)


def test_softmax_num_classes_zero():
    with pytest.raises(ValueError, match="`num_classes`"):
        P.softmax(np.ones((3, 2)), jnp.array([0, 1, 1]), num_classes=0)


def test_softmax_rows_not_one_hot():
    Y = np.array([[2.0, -1.0], [0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="must hold one-hot"):
        P.softmax(np.ones((3, 2)), Y)


def test_one_hot_negative_label():
    with pytest.raises(ValueError, match="`Y` must hold class labels"):
        P.one_hot(jnp.array([0, -1]))


def test_quadratic_nan_H_is_not_called_asymmetric():
    with pytest.raises(ValueError, match="`H` must be finite"):
        P.quadratic(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_quadratic_inf_H():
    with pytest.raises(ValueError, match="`H` must be finite"):
        P.quadratic(np.array([[np.inf, 0.0], [0.0, 1.0]]))


def test_quadratic_complex_H():
    with pytest.raises(TypeError, match="`H` must hold real numbers"):
        P.quadratic(np.eye(2) * 1j)


def test_quadratic_empty_H():
    with pytest.raises(ValueError, match="`H` must be a square matrix"):
        P.quadratic(np.zeros((0, 0)))


def test_quadratic_nan_center():
    with pytest.raises(ValueError, match="`center` must be finite"):
        P.quadratic(np.eye(2), center=[np.nan, 0.0])


def test_two_points_nan_example():
    with pytest.raises(ValueError, match="`a` must be finite"):
        P.two_points([np.nan], [1.0], [0.0])


def test_random_least_squares_integer_dtype():
    with pytest.raises(TypeError, match="`dtype` must be a floating dtype"):
        P.random_least_squares(10, 2, dtype=int)


def test_random_least_squares_bad_key():
    with pytest.raises(TypeError, match="`key` must be a JAX PRNG key"):
        P.random_least_squares(10, 2, key=3)


def test_tomography_nan_phantom():
    with pytest.raises(ValueError, match="`phantom` must be finite"):
        P.tomography(N=4, phantom=np.full((4, 4), np.nan))


def test_tomography_angles_not_numbers():
    with pytest.raises(TypeError, match="`angles` must hold real numbers"):
        P.tomography(N=4, angles=["a"])


def test_tomography_bad_key():
    with pytest.raises(TypeError, match="`key` must be a JAX PRNG key"):
        P.tomography(N=4, noise=0.1, key=3)


# --- a property: labels are either exactly one-hot or refused -------------------------


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(-3, 7), min_size=1, max_size=5),
    num_classes=st.one_of(st.none(), st.integers(1, 6)),
)
def test_one_hot_is_exact_or_refuses(labels, num_classes):
    """Oracle: ``np.eye(K)[labels]`` when every label lies in ``0..K-1``; otherwise a
    ``ValueError`` naming ``Y``, never a row of zeros."""
    y = np.asarray(labels)
    K = int(y.max()) + 1 if num_classes is None else num_classes
    if y.min() >= 0 and y.max() < K:
        got = np.asarray(P.one_hot(jnp.asarray(y), num_classes))
        np.testing.assert_array_equal(got, np.eye(K)[y])
    else:
        with pytest.raises(ValueError, match="`Y`"):
            P.one_hot(jnp.asarray(y), num_classes)
