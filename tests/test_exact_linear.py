"""longtail.engine.exact_linear: multinomial logistic regression solved exactly by full-batch L-BFGS."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from longtail.engine.device import one_thread
from longtail.engine.exact_linear import (
    ABSENT_CLASS_MARGIN,
    NotConvergedWarning,
    class_weights,
    fit_linear_exact,
    lbfgs,
    minimize_cross_entropy,
)


def problem(seed: int = 0, counts=(40, 25, 12, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 5) float64 overlapping Gaussian blobs, ``counts[c]`` points of class ``c``."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(loc=c * 0.8, scale=1.0, size=(n, 5)) for c, n in enumerate(counts)])
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return torch.tensor(x), torch.tensor(y)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_matches_scikit_learns_logistic_regression(class_weight):
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y = problem()
    C = 0.5  # scikit-learn's C; with balanced weights their sum is still N
    reference = sklearn.LogisticRegression(C=C, class_weight=class_weight, tol=1e-10, max_iter=10_000)
    reference.fit(x.numpy(), y.numpy())
    weight, bias = fit_linear_exact(x, y, 4, 1.0 / (C * len(y)), class_weight=class_weight, tol=1e-7)
    np.testing.assert_allclose(weight.numpy(), reference.coef_, atol=1e-5)
    # The unpenalised bias is defined up to a shared constant: compare it centred.
    np.testing.assert_allclose(
        bias.numpy() - bias.numpy().mean(), reference.intercept_ - reference.intercept_.mean(), atol=1e-5
    )
    np.testing.assert_array_equal(F.linear(x, weight, bias).argmax(1).numpy(), reference.predict(x.numpy()))


def test_deterministic_and_independent_of_chunking_and_input_precision():
    x, y = problem(1)
    first = fit_linear_exact(x, y, 4, 0.01, tol=1e-7)
    again = fit_linear_exact(x, y, 4, 0.01, tol=1e-7)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])  # zero start, full batch
    chunked = fit_linear_exact(x, y, 4, 0.01, tol=1e-7, chunk_rows=30)
    np.testing.assert_allclose(chunked[0].numpy(), first[0].numpy(), atol=1e-5)
    single = fit_linear_exact(x.float(), y, 4, 0.01, tol=1e-6)  # float32 features, cast chunk by chunk
    assert single[0].dtype == torch.float64
    np.testing.assert_allclose(single[0].numpy(), first[0].numpy(), atol=1e-4)


def test_class_weights_act_like_repeated_samples():
    x, y = problem(2)
    weighted = fit_linear_exact(x, y, 4, 0.01, class_weight=[3.0, 1.0, 1.0, 2.0], tol=1e-7)
    repeat = torch.tensor([3, 1, 1, 2])[y]
    repeated = fit_linear_exact(x.repeat_interleave(repeat, 0), y.repeat_interleave(repeat), 4, 0.01, tol=1e-7)
    np.testing.assert_allclose(weighted[0].numpy(), repeated[0].numpy(), atol=1e-5)
    counts = torch.bincount(y).double()
    assert torch.allclose(class_weights(y, 4, "balanced"), len(y) / (4 * counts))


def test_a_class_without_samples_is_never_predicted():
    x, y = problem(3)
    keep = y != 2
    weight, bias = fit_linear_exact(x[keep], y[keep], 4, 0.01, tol=1e-7)
    assert torch.equal(weight[2], torch.zeros(5, dtype=torch.float64))
    others = torch.tensor([0, 1, 3])
    assert float(bias[2]) == pytest.approx(float(bias[others].min()) - ABSENT_CLASS_MARGIN)
    # The other classes are the fit of a 3-class problem.
    alone_w, alone_b = fit_linear_exact(
        x[keep], torch.bucketize(y[keep], torch.tensor([0, 1, 3]), right=False), 3, 0.01, tol=1e-7
    )
    np.testing.assert_allclose(weight[others].numpy(), alone_w.numpy(), atol=1e-5)


def test_any_differentiable_head_reaches_a_zero_gradient():
    """LWS-like: one scale per class on frozen logits, penalised, solved by the same L-BFGS."""
    x, y = problem(4)
    weight, bias = fit_linear_exact(x, y, 4, 0.05)
    scales = torch.ones(4, dtype=torch.float64)
    solution = minimize_cross_entropy(
        lambda rows: F.linear(rows, weight, bias) * scales, [scales], x, y, l2=0.1, tol=1e-7
    )
    assert solution.converged and solution.grad_max <= 1e-7 and not scales.requires_grad
    scales.requires_grad_(True)
    loss = F.cross_entropy(F.linear(x, weight, bias) * scales, y) + 0.05 * scales.pow(2).sum()
    (grad,) = torch.autograd.grad(loss, scales)
    assert grad.abs().max() < 1e-6


def test_stopping_early_warns():
    x, y = problem(5)
    with pytest.warns(NotConvergedWarning, match="L-BFGS stopped after 1 iterations"):
        fit_linear_exact(x, y, 4, 0.01, max_iter=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"l2": -1.0}, r"l2=-1.0, expected a number >= 0"),
        ({"num_classes": 3}, r"labels must lie in \[0, 3\); got 0..3"),
        ({"class_weight": "inverse"}, r"class_weight='inverse': expected None, 'balanced'"),
        ({"class_weight": [1.0, -1.0, 1.0, 1.0]}, r"expected 4 finite weights >= 0"),
        ({"backend": "scipy"}, r"backend='scipy', expected one of auto, numpy, torch"),
        ({"backend": "numpy", "dtype": torch.float32}, r"backend='numpy' needs x on the CPU and dtype float64"),
    ],
)
def test_bad_input_is_a_one_line_error(kwargs, message):
    x, y = problem()
    arguments = {"num_classes": 4, "l2": 0.01, **kwargs}
    with pytest.raises(ValueError, match=message) as error:
        fit_linear_exact(x, y, **arguments)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_numpy_and_torch_backends_agree(class_weight):
    """One L-BFGS, the objective computed in NumPy (the CPU default in float64) or in torch."""
    x, y = problem(6)
    kwargs = {"class_weight": class_weight, "tol": 1e-8, "return_solution": True}
    w_np, b_np, on_numpy = fit_linear_exact(x, y, 4, 0.01, backend="numpy", **kwargs)
    with one_thread():  # tiny operations: a pool's threads would only wait on each other
        w_t, b_t, on_torch = fit_linear_exact(x, y, 4, 0.01, backend="torch", **kwargs)
    assert on_numpy.converged and on_torch.converged and w_np.dtype == w_t.dtype == torch.float64
    np.testing.assert_allclose(w_np.numpy(), w_t.numpy(), atol=1e-6)
    np.testing.assert_allclose(b_np.numpy(), b_t.numpy(), atol=1e-6)
    # The same objective: equal losses, and the same answer from chunks of rows.
    assert on_numpy.loss == pytest.approx(on_torch.loss, abs=1e-12)
    chunked = fit_linear_exact(x, y, 4, 0.01, backend="numpy", chunk_rows=7, **kwargs)
    np.testing.assert_allclose(chunked[0].numpy(), w_np.numpy(), atol=1e-6)
    # "auto" is NumPy on the CPU in float64, torch in float32.
    assert torch.equal(fit_linear_exact(x, y, 4, 0.01, tol=1e-8, class_weight=class_weight)[0], w_np)
    with one_thread():
        single = fit_linear_exact(x, y, 4, 0.01, tol=1e-4, class_weight=class_weight, dtype=torch.float32)
    assert single[0].dtype == torch.float32
    np.testing.assert_allclose(single[0].numpy(), w_np.numpy(), atol=1e-2)


def test_lbfgs_minimises_on_numpy_arrays_and_tensors_alike():
    """A convex quadratic 0.5 x'Ax - b'x: the minimum solves Ax = b, whatever the kind of vector."""
    rng = np.random.default_rng(7)
    m = rng.normal(size=(12, 12))
    a, b = m @ m.T + 12 * np.eye(12), rng.normal(size=12)
    expected = np.linalg.solve(a, b)
    for kind in (np.asarray, torch.as_tensor):
        matrix, vector = kind(a), kind(b)

        def objective(v, matrix=matrix, vector=vector):
            gradient = matrix @ v - vector
            return float(0.5 * v.dot(matrix @ v) - vector.dot(v)), gradient

        # tol 1e-8: the gradient's 1e-10 is below what the loss's float64 rounding resolves here (the decrease
        # it promises is about 1e-20 of a loss of 0.1), so reaching it depended on the BLAS build's rounding.
        found, solution = lbfgs(objective, kind(np.zeros(12)), tol=1e-8)
        assert solution.converged and type(found) is type(vector)
        np.testing.assert_allclose(np.asarray(found), expected, atol=1e-8)
