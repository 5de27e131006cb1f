"""Index bookkeeping for features with ``c`` channels of every degree ``0..L``.

The model keeps node and edge features as tensors of shape ``(n, c, M)`` with
``M = (L+1)^2``: every degree has the same channel count, so inner products
and per-degree scalings are one batched operation with no Python loop over
degrees. e3nn stores the same numbers as ``(n, sum_l c (2l+1))`` with the
degree blocks one after another and, inside a block, channel-major
``(c, 2l+1)``. Both layouts hold exactly the same numbers; the conversion is
a fixed permutation of columns.

The channels-last operations have a second form, used while ``torch.compile`` traces
(``torch.compiler.is_compiling()``): per-degree slices, sums and element-wise products
that inductor fuses into its generated kernels, where the eager form uses batched products
with inner dimensions of 2-9 and ``index_select`` along the degree axis (fast in eager
ATen; left unfused by inductor, or in the case of ``index_select``'s backward generated
as a slow scatter). Both forms compute the same numbers (``tests/test_neighbour_sum.py``);
they stay two because each is the faster one where it runs (eager ATen or inductor).
"""

import torch
from e3nn import o3


class SphericalLayout(torch.nn.Module):
    """Irreps ``c x 0e + c x 1o + c x 2e + ...`` (parity ``(-1)^l``) up to ``lmax``.

    Buffers:
        degree_of_m: ``(M,)`` long, the degree ``l`` of each spherical column.
        inner_product: ``(M, L+1)``, sums the ``2l+1`` columns of degree ``l``
            and divides by ``sqrt(2l+1)``: ``(a * b) @ inner_product`` is the
            per-degree inner product ``<a^l, b^l> / sqrt(2l+1)``.
        to_e3nn_index / from_e3nn_index: ``(c M,)`` permutations between the
            flattened ``(c, M)`` layout and e3nn's.
    """

    def __init__(self, lmax: int, channels: int):
        super().__init__()
        if lmax < 0:
            raise ValueError(f"lmax must be >= 0, got {lmax}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.lmax = lmax
        self.channels = channels
        self.num_m = (lmax + 1) ** 2
        self.irreps = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
        self.sh_irreps = o3.Irreps.spherical_harmonics(lmax)

        degree = torch.cat([torch.full((2 * l + 1,), l, dtype=torch.long) for l in range(lmax + 1)])
        self.register_buffer("degree_of_m", degree, persistent=False)
        ip = torch.zeros(self.num_m, lmax + 1)
        ip[torch.arange(self.num_m), degree] = 1.0 / torch.sqrt(2.0 * degree + 1.0)
        self.register_buffer("inner_product", ip, persistent=False)
        # first column of each degree and one past the last, (L+2,): degree l is l^2 .. (l+1)^2
        self.register_buffer("degree_start", torch.arange(lmax + 2) ** 2, persistent=False)
        self.register_buffer("degree_scale", 1.0 / torch.sqrt(2.0 * torch.arange(lmax + 1) + 1.0), persistent=False)
        # one-hot (L+1, M): row l selects the 2l+1 columns of degree l
        self.register_buffer("degree_onehot", (ip > 0).to(ip.dtype).t().contiguous(), persistent=False)

        # e3nn column e of block l, channel k, component m  <->  flat index k*M + l^2 + m
        to_e3nn = []
        for l in range(lmax + 1):
            for k in range(channels):
                for m in range(2 * l + 1):
                    to_e3nn.append(k * self.num_m + l * l + m)
        to_e3nn = torch.tensor(to_e3nn, dtype=torch.long)
        self.register_buffer("to_e3nn_index", to_e3nn, persistent=False)
        self.register_buffer("from_e3nn_index", torch.argsort(to_e3nn), persistent=False)

    def to_e3nn(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, c, M)`` -> ``(n, irreps.dim)`` in e3nn's layout."""
        return x.reshape(x.shape[0], -1)[:, self.to_e3nn_index]

    def from_e3nn(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, irreps.dim)`` in e3nn's layout -> ``(n, c, M)``."""
        return x[:, self.from_e3nn_index].reshape(x.shape[0], self.channels, self.num_m)

    def per_degree(self, coeff: torch.Tensor) -> torch.Tensor:
        """Broadcast ``(..., L+1)`` per-degree values to ``(..., M)`` columns.

        A product with the one-hot ``(L+1, M)`` matrix: exact (one non-zero term per
        column), and on CPU faster than ``index_select`` along the last axis, forward and
        backward (``benchmarks/README.md``).
        """
        return coeff @ self.degree_onehot

    def per_degree_channels_last(self, coeff: torch.Tensor) -> torch.Tensor:
        """``(..., L+1, c)`` per-degree values -> ``(..., M, c)``, one row per spherical column."""
        if torch.compiler.is_compiling():
            # inductor turns the backward of index_select (an index_add along this axis) into
            # a slow scatter kernel; row l expanded to its 2l+1 rows is plain indexing for it,
            # and its backward a sum over those rows
            return torch.cat(
                [
                    coeff.narrow(-2, l, 1).expand(*coeff.shape[:-2], 2 * l + 1, coeff.shape[-1])
                    for l in range(self.lmax + 1)
                ],
                dim=-2,
            )
        return coeff.index_select(-2, self.degree_of_m)

    def degree_sum_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """``sum_{m in l} x[..., m, :] / sqrt(2l+1)``: ``(E, M, c) -> (E, L+1, c)``."""
        if torch.compiler.is_compiling():
            # slices and sums, which inductor fuses with the products around them, instead of a
            # batched product with an inner dimension of (L+1)^2 that it leaves to ATen; the scale
            # is the buffer's 1/sqrt(2l+1), rounded as the eager form's
            return torch.cat(
                [
                    x.narrow(-2, l * l, 2 * l + 1).sum(-2, keepdim=True) * self.inner_product[l * l, l]
                    for l in range(self.lmax + 1)
                ],
                dim=-2,
            )
        return torch.matmul(self.inner_product.t(), x)

    def inner(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-degree inner products ``<a^l, b^l>/sqrt(2l+1)``: ``(..., M) x (..., M) -> (..., L+1)``."""
        return (a * b) @ self.inner_product

    def inner_with_harmonics(self, h: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """``<h^{l,k}, Y^l>/sqrt(2l+1)`` for every channel: ``(E, c, M) x (E, M) -> (E, c, L+1)``.

        One batched matrix product ``h @ (Y[:, :, None] * inner_product)`` with an
        ``(E, M, L+1)`` right factor, instead of an ``(E, c, M)`` temporary.
        """
        return torch.bmm(h, Y.unsqueeze(-1) * self.inner_product)

    def combine_with_harmonics(
        self, alpha: torch.Tensor, h: torch.Tensor, beta: torch.Tensor, Y: torch.Tensor
    ) -> torch.Tensor:
        """``alpha^{l,k} h^{l,k} + beta^{l,k} Y^l``: ``alpha, beta (E, c, L+1)``, ``h (E, c, M)``,
        ``Y (E, M)`` -> ``(E, c, M)``.

        The ``Y`` term is one batched product ``beta @ (degree_onehot * Y)`` (its right factor,
        ``(E, L+1, M)``, holds ``Y^l`` in row ``l``); the ``h`` term is added in place, so the
        step writes two ``(E, c, M)`` tensors where broadcasting ``alpha`` and ``beta`` wrote five.
        """
        out = torch.bmm(beta, Y.unsqueeze(1) * self.degree_onehot)
        return out.addcmul_(self.per_degree(alpha), h)

    def extra_repr(self) -> str:
        return f"{self.irreps}"
