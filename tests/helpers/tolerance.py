"""Tolerances for comparing two float computations of the same quantity, derived from the
computation rather than typed in.

Two evaluations of a length-n dot product that add the same terms in different orders (a matrix
product blocked differently for a different batch shape, a reduction split into chunks) each lie
within γ_n·(|x|·|w|) of the exact value, γ_n = n·u / (1 − n·u) with u = eps/2 the unit roundoff
(Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., §3.1), so they differ by at
most 2·γ_n·(|x|·|w|). Each further elementwise operation (a bias added, a softcap's tanh and
product) rounds once per evaluation: at most 2·u·|value| apart per operation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gamma(n: int, dtype: torch.dtype) -> float:
    """γ_n of ``dtype``: the relative error bound of an n-term sum."""
    u = torch.finfo(dtype).eps / 2
    return n * u / (1 - n * u)


def logit_difference_bound(view, resid: Tensor) -> float:
    """The most two evaluations of ``view.logits_from_resid(resid)`` [..., V] that differ only in the
    order of their sums can differ by, for any one logit.

    - The final norm's scale (a mean of d squares, then rsqrt): relative error ≤ γ_d + 2u per
      evaluation, so the normed residual x differs by ≤ 2(γ_d + 2u)·|x| elementwise.
    - The unembedding x·W_U: ≤ 2γ_d·(|x|·|W_U|) apart (orders), plus the x difference carried
      through |W_U|: 2(γ_d + 2u)·(|x|·|W_U|).
    - The bias and the softcap (tanh of l/c times c; tanh is 1-Lipschitz): 2u·|l| per operation,
      four of them.
    """
    dtype = resid.dtype
    u = torch.finfo(dtype).eps / 2
    d = resid.shape[-1]
    x = view.final_norm(resid).double()
    reach = (x.abs() @ view.weights.W_U.abs().double()).max().item()  # max over logits of |x|·|W_U|
    logits = view.logits_from_resid(resid).double()
    return (2 * gamma(d, dtype) + 2 * (gamma(d, dtype) + 2 * u)) * reach + 4 * 2 * u * logits.abs().max().item()


def mean_difference_bound(values_bound: float, n: int, magnitude: float, dtype: torch.dtype) -> float:
    """Two means of n values, each value known to within ``values_bound``, summed in possibly
    different orders: ≤ values_bound + 2γ_n·magnitude (magnitude: the largest |value|)."""
    return values_bound + 2 * gamma(n, dtype) * magnitude
