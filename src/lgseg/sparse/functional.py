"""Sparse convolution as gather -> matmul -> index_add per kernel offset, with a memory-lean custom backward."""

from __future__ import annotations

import torch


class SparseConvolution(torch.autograd.Function):
    """out[o] = sum_k sum_{(i, o) in map_k} features[i] @ kernel[k]; maps are (input rows, output rows) or None.

    Only the inputs and the kernel are saved for backward (plain autograd would keep every gathered block).
    Rows are gathered with index_select, which is faster on CPU than advanced indexing.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, kernel: torch.Tensor, maps: list, num_out: int) -> torch.Tensor:
        out = features.new_zeros(num_out, kernel.shape[-1])
        for k, pair in enumerate(maps):
            if pair is None:
                out += features @ kernel[k]
            elif pair[0].numel():
                out.index_add_(0, pair[1], features.index_select(0, pair[0]) @ kernel[k])
        ctx.save_for_backward(features, kernel)
        ctx.maps = maps
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, kernel = ctx.saved_tensors
        grad_features = torch.zeros_like(features) if ctx.needs_input_grad[0] else None
        grad_kernel = torch.zeros_like(kernel) if ctx.needs_input_grad[1] else None
        for k, pair in enumerate(ctx.maps):
            if pair is None:
                rows_in, g = features, grad_out
            elif pair[0].numel():
                rows_in, g = features.index_select(0, pair[0]), grad_out.index_select(0, pair[1])
            else:
                continue
            if grad_kernel is not None:
                grad_kernel[k] = rows_in.T @ g
            if grad_features is not None:
                if pair is None:
                    grad_features += g @ kernel[k].T
                else:
                    grad_features.index_add_(0, pair[0], g @ kernel[k].T)
        return grad_features, grad_kernel, None, None


def sparse_convolution(features: torch.Tensor, kernel: torch.Tensor, maps: list, num_out: int) -> torch.Tensor:
    return SparseConvolution.apply(features, kernel, maps, num_out)


def transpose_maps(maps: list) -> list:
    """The maps of the transposed convolution: every (input, output) pair swapped."""
    return [None if pair is None else (pair[1], pair[0]) for pair in maps]
