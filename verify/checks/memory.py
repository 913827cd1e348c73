"""The memory claim (docs/mathematics.md §8): MAML's meta-gradient needs memory linear in the number of inner
steps K, iMAML's the memory of one gradient of L̂, independent of K.

Measured deterministically as the peak number of bytes held by tensors that autograd saves for
a backward pass (:func:`verify.measure.saved_bytes`); on CUDA also as peak allocated memory
(:func:`verify.measure.cuda_peak_bytes`)."""
from __future__ import annotations

from verify.checks._result import compare
from verify.measure import cuda_peak_bytes, saved_bytes
from verify.registry import claim

__all__ = ["check_linear_growth", "check_constant"]

SECTION = "§8"


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


@claim("memory", title="Memory: MAML linear in K, iMAML constant", section=SECTION,
       statement="bytes saved for backward: MAML's grow linearly with the number of inner steps, "
       "iMAML's do not depend on it (quadratic, logistic, MLP; deterministic byte counts)",
       loose="on a quadratic task torch autograd's MAML saves only A (the Hessian does not "
       "depend on φ), so its bytes are constant; the linear growth is for a generic task "
       "(backward='protocol' saves φₖ each step) and for curved ones (logistic, networks)")
def run(ctx):
    Ks = (5, 10, 20) if ctx.quick else (5, 10, 20, 40, 100)
    out = []
    cases = [("quadratic", "protocol"), ("logistic", "auto"), ("mlp", "auto")]
    for model, backward in cases:
        inst = dict(model=model, backward=backward, seed=ctx.seed)
        maml = {K: saved_bytes("maml", K, model=model, backward=backward, seed=ctx.seed) for K in Ks}
        imaml = {K: saved_bytes("imaml", K, model=model, seed=ctx.seed) for K in Ks}
        out += check_linear_growth(maml, instance=dict(inst, method="maml"))
        out.append(check_constant(imaml, instance=dict(inst, method="imaml")))
    # reported, not a growth check: autograd's MAML on a quadratic (constant, see `loose`)
    quad = {K: saved_bytes("maml", K, model="quadratic", backward="autograd", seed=ctx.seed)
            for K in Ks}
    out.append(check_constant(quad, instance=dict(model="quadratic", backward="autograd",
                                                  method="maml (autograd; Hessian constant)")))
    if ctx.device == "cuda":
        for K in Ks:
            out.append(compare("memory", SECTION, "CUDA peak bytes: iMAML ≤ MAML (MLP)",
                               cuda_peak_bytes("imaml", K), cuda_peak_bytes("maml", K),
                               instance={"model": "mlp", "inner_steps": K, "device": "cuda"}))
    return out
