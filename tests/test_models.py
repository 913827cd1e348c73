"""verify.models: the networks and ModelTask (the task protocol on a torch module)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from solvers import check_task
from theory.tolerances import machine_epsilon, relative_tolerance, rounding_allowance
from verify.models import MLP, ConvNet, ModelTask, ParameterLayout, flat_parameters


def _conv_task(seed, *, lam=2.0, dtype=torch.float64, n_way=3, shots=2):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ConvNet(n_way, image_size=8, filters=4, layers=3)
    sx = torch.randn(n_way * shots, 1, 8, 8, generator=g)
    qx = torch.randn(n_way * shots, 1, 8, 8, generator=g)
    y = torch.arange(n_way).repeat_interleave(shots)
    task = ModelTask(model, sx, y, qx, y.clone(), lam=lam)
    return task, flat_parameters(model, dtype=dtype)


def _linear_task(seed, n=7, d_in=3, d_out=2):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(d_in, d_out, hidden=())
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    return model, x, y, ModelTask(model, x, y, x, y, lam=1.0, loss="mse")


def test_conv_shapes_and_layout():
    model = ConvNet(5, image_size=28, filters=64, layers=4)
    layout = ParameterLayout.of(model)
    assert layout.size == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 5)
    assert model.head.in_features == 64  # 28 -> 14 -> 7 -> 3 -> 1
    mini = ConvNet(5, in_channels=3, image_size=84, filters=32)
    assert mini.head.in_features == 32 * 5 * 5  # 84 -> 42 -> 21 -> 10 -> 5
    # batch norm keeps no running statistics: no buffers, and train/eval agree
    assert list(model.buffers()) == []
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model.train()(x), model.eval()(x))
    phi = flat_parameters(model)
    assert phi.shape == (layout.size,) and not phi.requires_grad
    unflat = layout.unflatten(phi)
    assert all(unflat[n].shape == p.shape for n, p in model.named_parameters())


@settings(max_examples=8)
@given(seed=st.integers(0, 2**16))
def test_inner_grad_matches_module_autograd(seed):
    """The functional gradient equals loss.backward() on the module's own parameters."""
    task, phi = _conv_task(seed, dtype=torch.float32)
    model = task.model
    for p in model.parameters():
        p.grad = None
    sx, sy = task._data["support"]
    torch.nn.functional.cross_entropy(model(sx), sy).backward()
    reference = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    g = task.inner_grad(phi)
    tol = rounding_allowance(torch.float32, dim=task.dim, scale=float(reference.norm()))
    assert float((g - reference).norm()) <= tol


@given(seed=st.integers(0, 2**16))
def test_hvp_matches_closed_form_hessian(seed):
    """Linear model + mean squared error: ∇²L̂ = (2/(n·o)) [x;1][x;1]ᵀ per output (exact)."""
    model, x, y, task = _linear_task(seed)
    n, o = y.shape
    phi = flat_parameters(model, dtype=torch.float64)
    xb = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], dim=1)
    gram = 2.0 / (n * o) * xb.T @ xb
    # φ = [W (o × d_in) row-major, b (o)]
    d_in = x.shape[1]
    v = torch.randn(task.dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    vw, vb = v[: o * d_in].view(o, d_in), v[o * d_in:]
    hv = gram @ torch.cat([vw, vb[:, None]], dim=1).T  # (d_in + 1, o)
    expected = torch.cat([hv[:d_in].T.reshape(-1), hv[d_in]])
    got = task.inner_hvp(phi, v)
    tol = rounding_allowance(torch.float64, dim=n * (d_in + 1),
                             scale=float(torch.linalg.matrix_norm(gram, 2) * v.norm()))
    assert float((got - expected).norm()) <= tol


def _fd_errors(task, phi, v, hvp, steps):
    return [float((hvp - (task.inner_grad(phi + e * v) - task.inner_grad(phi - e * v)) / (2 * e))
                  .norm()) for e in steps]


FD_STEPS = [10.0 ** -k for k in range(2, 8)]


def _fd_allowance(task, phi, hv):
    """Nocedal & Wright §8.1: a difference quotient at its best step is accurate to about
    √eps (forward differences; central ones do better, eps^(2/3)) relative to the sizes of
    the gradient and the HVP."""
    return machine_epsilon(torch.float64) ** 0.5 * float(hv.norm() + task.inner_grad(phi).norm())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hvp_against_finite_differences_of_inner_grad(seed):
    """Central differences of inner_grad over a grid of steps ε reach the HVP to the accuracy
    of a difference quotient; the Hessian of the wrong loss (a planted defect) does not."""
    task, phi = _conv_task(seed)
    v = torch.randn(task.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v = v / v.norm()
    hv = task.inner_hvp(phi, v)
    assert min(_fd_errors(task, phi, v, hv, FD_STEPS)) <= _fd_allowance(task, phi, hv)
    # negative control: the Hessian of the OUTER loss in place of the inner one
    with torch.enable_grad():
        p = phi.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(task.outer_loss(p), p, create_graph=True)
        (wrong,) = torch.autograd.grad(g, p, grad_outputs=v)
    assert min(_fd_errors(task, phi, v, wrong, FD_STEPS)) > _fd_allowance(task, phi, wrong)


@settings(max_examples=8)
@given(seed=st.integers(0, 2**16))
def test_hvp_is_symmetric_and_linear(seed):
    task, phi = _conv_task(seed)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(task.dim, generator=g, dtype=torch.float64)
    v = torch.randn(task.dim, generator=g, dtype=torch.float64)
    hu, hv = task.inner_hvp(phi, u), task.inner_hvp(phi, v)
    scale = float(u.norm() * hv.norm() + v.norm() * hu.norm())
    assert abs(float(u @ hv - v @ hu)) <= rounding_allowance(torch.float64, dim=task.dim,
                                                              scale=scale)
    both = task.inner_hvp(phi, 2.0 * u - v)
    assert float((both - (2.0 * hu - hv)).norm()) <= rounding_allowance(
        torch.float64, dim=task.dim, scale=float(2 * hu.norm() + hv.norm()))


def test_inner_grad_is_differentiable_for_maml():
    """With phi.requires_grad, a loop of inner steps can be backpropagated (MAML); the
    derivative of one step agrees with (I − αH)∇L computed from inner_hvp."""
    task, theta = _conv_task(3)
    alpha = 0.1
    th = theta.clone().requires_grad_(True)
    phi = th - alpha * task.inner_grad(th)
    assert phi.requires_grad
    (meta,) = torch.autograd.grad(task.outer_loss(phi), th)
    gq = task.outer_grad(phi.detach())
    expected = gq - alpha * task.inner_hvp(theta, gq)
    assert float((meta - expected).norm()) <= rounding_allowance(
        torch.float64, dim=task.dim, scale=float(gq.norm() + expected.norm()))
    # without requires_grad everything is detached
    assert not task.inner_grad(theta).requires_grad
    assert not task.inner_loss(theta).requires_grad


def test_follows_task_protocol_and_float32_agrees_with_float64():
    task, phi = _conv_task(4, dtype=torch.float32)
    check_task(task)
    g32, g64 = task.inner_grad(phi), task.inner_grad(phi.double())
    assert g32.dtype == torch.float32 and g64.dtype == torch.float64
    rel = float((g32.double() - g64).norm() / g64.norm())
    assert rel <= relative_tolerance(torch.float32, dim=task.dim)
    assert 0.0 <= task.accuracy(phi) <= 1.0


def test_bad_input_names_the_argument():
    task, phi = _conv_task(5)
    with pytest.raises(ValueError, match="phi"):
        task.inner_grad(phi[:-1])
    with pytest.raises(ValueError, match="phi"):
        task.inner_loss(torch.full_like(phi, float("nan")))
    with pytest.raises(TypeError, match="phi"):
        task.inner_grad(phi.numpy())
    with pytest.raises(ValueError, match="v"):
        task.inner_hvp(phi, phi[:3])
    with pytest.raises(TypeError, match="v"):
        task.inner_hvp(phi, phi.float())
    x = torch.randn(4, 1, 8, 8)
    model = ConvNet(2, image_size=8, filters=2, layers=3)
    with pytest.raises(ValueError, match="lam"):
        ModelTask(model, x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long),
                  lam=0.0)
    with pytest.raises(ValueError, match="support_x and support_y"):
        ModelTask(model, x, torch.zeros(3, dtype=torch.long), x, torch.zeros(4, dtype=torch.long),
                  lam=1.0)
    with pytest.raises(TypeError, match="query_y"):
        ModelTask(model, x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4), lam=1.0)
    with pytest.raises(ValueError, match="loss"):
        ModelTask(model, x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long),
                  lam=1.0, loss="hinge")
    with pytest.raises(ValueError, match="image_size"):
        ConvNet(5, image_size=8, layers=4)
    with pytest.raises(ValueError, match="filters"):
        ConvNet(5, filters=0)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(2, 3, 8, 8))
