"""The memory claim (docs/mathematics.md §8): MAML's meta-gradient needs memory linear in the number of inner
steps K, iMAML's the memory of one gradient of L̂, independent of K.

Measured deterministically, on the run's device (CPU or CUDA tensors alike), as the peak number
of bytes held by tensors that autograd saves for a backward pass
(:func:`verify.measure.saved_bytes`): that is what the claim is about. On CUDA the allocator's
peak (:func:`verify.measure.cuda_peak_figures`, every method warmed up first) is recorded beside
it as a figure, not judged: it also holds workspaces and temporaries that are no part of the
claim, and without a warm-up the process's first-use allocations (cuBLAS workspace) land on
whichever method runs first."""
from __future__ import annotations

from verify.checks._result import compare
from verify.measure import cuda_peak_figures, saved_bytes
from verify.registry import claim

__all__ = ["check_linear_growth", "check_constant", "check_not_above", "COMPARE_FROM_K"]

SECTION = "§8"
#: from this many inner steps on, iMAML's meta-gradient must hold no more than MAML's
COMPARE_FROM_K = 16


def check_linear_growth(bytes_by_K: dict, *, instance=None):
    """MAML: bytes(K) is exactly affine in K with a positive slope. Two CheckResults: the
    largest deviation from the line through the first two points (must be 0 bytes), and the
    slope (must be > 0)."""
    Ks = sorted(bytes_by_K)
    k0, k1 = Ks[0], Ks[1]
    slope = (bytes_by_K[k1] - bytes_by_K[k0]) / (k1 - k0)
    dev = max(abs(bytes_by_K[k] - (bytes_by_K[k0] + slope * (k - k0))) for k in Ks)
    details = {"bytes": {int(k): int(v) for k, v in bytes_by_K.items()}, "bytes_per_step": slope}
    return [compare("memory", SECTION, "MAML's saved bytes are affine in K (deviation in bytes)",
                    dev, 0.0, instance=instance, details=details),
            compare("memory", SECTION, "MAML's saved bytes grow with K (bytes per inner step > 0)",
                    slope, 0.0, relation=">", kind="claim", instance=instance, details=details)]


def check_constant(bytes_by_K: dict, *, instance=None):
    """iMAML: bytes(K) does not depend on K (largest deviation from bytes(K₀), in bytes)."""
    Ks = sorted(bytes_by_K)
    dev = max(abs(bytes_by_K[k] - bytes_by_K[Ks[0]]) for k in Ks)
    return compare("memory", SECTION, "iMAML's saved bytes do not depend on K (deviation in bytes)",
                   dev, 0.0, instance=instance,
                   details={"bytes": {int(k): int(v) for k, v in bytes_by_K.items()}})


def check_not_above(imaml_bytes: int, maml_bytes: int, inner_steps: int, *, instance=None,
                    details=None):
    """iMAML's saved bytes ≤ MAML's at the same number of inner steps K (≥ COMPARE_FROM_K:
    for a handful of steps MAML's graph can be smaller than one Hessian-vector product's)."""
    if inner_steps < COMPARE_FROM_K:
        raise ValueError(f"inner_steps must be >= {COMPARE_FROM_K}, got {inner_steps!r}")
    return compare("memory", SECTION,
                   f"iMAML's saved bytes <= MAML's at K >= {COMPARE_FROM_K} inner steps (MLP)",
                   imaml_bytes, maml_bytes, instance=instance,
                   details={"imaml_bytes": int(imaml_bytes), "maml_bytes": int(maml_bytes),
                            **(details or {})})


@claim("memory", title="Memory: MAML linear in K, iMAML constant", section=SECTION,
       statement="bytes saved for backward: MAML's grow linearly with the number of inner steps, "
       "iMAML's do not depend on it and from 16 steps on are no more than MAML's (quadratic, "
       "logistic, MLP; deterministic byte counts on the run's device)",
       loose="on a quadratic task torch autograd's MAML saves only A (the Hessian does not "
       "depend on φ), so its bytes are constant; the linear growth is for a generic task "
       "(backward='protocol' saves φₖ each step) and for curved ones (logistic, networks)")
def run(ctx):
    Ks = (5, 10, 20) if ctx.quick else (5, 10, 20, 40, 100)
    out = []
    on = dict(seed=ctx.seed, dtype=ctx.dtype, device=ctx.device)
    where = {"device": ctx.device, "dtype": ctx.dtype}
    by_model = {}
    cases = [("quadratic", "protocol"), ("logistic", "auto"), ("mlp", "auto")]
    for model, backward in cases:
        inst = dict(model=model, backward=backward, seed=ctx.seed, **where)
        maml = {K: saved_bytes("maml", K, model=model, backward=backward, **on) for K in Ks}
        imaml = {K: saved_bytes("imaml", K, model=model, **on) for K in Ks}
        by_model[model] = (maml, imaml)
        out += check_linear_growth(maml, instance=dict(inst, method="maml"))
        out.append(check_constant(imaml, instance=dict(inst, method="imaml")))
    # reported, not a growth check: autograd's MAML on a quadratic (constant, see `loose`)
    quad = {K: saved_bytes("maml", K, model="quadratic", backward="autograd", **on) for K in Ks}
    out.append(check_constant(quad, instance=dict(model="quadratic", backward="autograd",
                                                  method="maml (autograd; Hessian constant)",
                                                  **where)))
    maml, imaml = by_model["mlp"]
    big = [K for K in Ks if K >= COMPARE_FROM_K]
    allocator = (cuda_peak_figures(big, dtype=ctx.dtype, seed=ctx.seed)
                 if str(ctx.device).startswith("cuda") else None)
    for K in big:
        details = {}
        if allocator is not None:  # recorded, not judged (see the module docstring)
            details = {"cuda_allocator_peak_bytes_after_warmup":
                       {m: allocator[m][K] for m in allocator}}
        out.append(check_not_above(imaml[K], maml[K], K, details=details,
                                   instance=dict(model="mlp", inner_steps=K, seed=ctx.seed,
                                                 **where)))
    return out
