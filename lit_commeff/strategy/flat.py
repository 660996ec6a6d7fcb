"""A model's trainable parameters seen as one flat vector, the algorithms' variable ``x``."""

from __future__ import annotations

import torch
from torch import Tensor


class FlatParams:
    """Views a fixed list of parameters as one flat vector (read, write, gradients).

    Args:
        params: The trainable parameters, in the order that defines the flat layout.
    """

    def __init__(self, params: list[torch.nn.Parameter]) -> None:
        self.params = list(params)
        self.numels = [p.numel() for p in self.params]
        self.numel = sum(self.numels)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device

    def _slices(self, flat: Tensor):
        offset = 0
        for p, n in zip(self.params, self.numels, strict=True):
            yield p, flat[offset : offset + n].view_as(p)
            offset += n

    def get(self) -> Tensor:
        """A new flat tensor holding the parameters' values."""
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    @torch.no_grad()
    def set(self, flat: Tensor) -> None:
        """Copy a flat vector into the parameters."""
        for p, view in self._slices(flat):
            p.copy_(view)

    def grad(self) -> Tensor:
        """A new flat tensor of the gradients (zeros where a parameter got none)."""
        return torch.cat(
            [
                p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros(n, dtype=p.dtype, device=p.device)
                for p, n in zip(self.params, self.numels, strict=True)
            ]
        )

    @torch.no_grad()
    def set_grad(self, flat: Tensor) -> None:
        """Write a flat vector into the parameters' ``.grad`` (allocating where missing)."""
        for p, view in self._slices(flat):
            if p.grad is None:
                p.grad = view.clone()
            else:
                p.grad.copy_(view)
