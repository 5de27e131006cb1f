"""A plain multilayer perceptron on invariant features."""

import torch


def mlp(dims, activation=torch.nn.SiLU, bias_last: bool = True) -> torch.nn.Sequential:
    """``Linear -> act -> ... -> Linear`` through the sizes in ``dims`` (at least two)."""
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least input and output sizes, got {dims}")
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(torch.nn.Linear(d_in, d_out, bias=bias_last or not last))
        if not last:
            layers.append(activation())
    return torch.nn.Sequential(*layers)
