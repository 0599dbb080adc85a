"""Sparse convolution as gather -> matmul per kernel offset -> one sparse sum, with a memory-lean backward."""

from __future__ import annotations

import torch

from lgseg.sparse.tensor import KernelMap

PRODUCTS_BYTES = 1 << 28  # most bytes of per-pair products held at once (one group of kernel offsets)


def _compute_dtype(features: torch.Tensor) -> torch.dtype:
    """The matmul dtype: autocast's where it is on for the features' device, else the features' own."""
    device = features.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else features.dtype


def _neighbourhoods(features: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """(num_out, volume * C) every output's neighbours' features side by side, zeros where there is none."""
    padded = torch.cat([features, features.new_zeros(1, features.shape[1])])
    return padded.index_select(0, kmap.neighbour_table().flatten()).view(kmap.num_out, -1)


def _max_pairs(width: int, dtype: torch.dtype) -> int:
    """Pairs per group of offsets whose (pairs, width) block of products fits PRODUCTS_BYTES."""
    return max(1, PRODUCTS_BYTES // (width * torch.finfo(dtype).bits // 8))


class SparseConvolution(torch.autograd.Function):
    """out[o] = sum_k sum_{(i, o) in map_k} features[i] @ kernel[k].

    The products of a group of offsets go into one (pairs, C_out) block, which a 0/1 CSR matrix sums into the
    output rows (accumulated in float32 or wider); the groups keep each block within PRODUCTS_BYTES. A narrow
    input (C_in * 4 <= C_out, as the first layer's 3 colours) instead gathers each output's whole neighbourhood,
    zeros included, for one matmul with the whole kernel: fewer bytes than the per-offset products. Only the
    inputs and the kernel are saved for backward (plain autograd would keep every gathered block). Rows are
    gathered with index_select, faster on CPU than advanced indexing.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        dtype = _compute_dtype(features)
        sum_dtype = torch.promote_types(dtype, torch.float32)
        _, in_channels, out_channels = kernel.shape
        ctx.neighbourhoods = in_channels * 4 <= out_channels
        with torch.autocast(features.device.type, enabled=False):
            x, w = features.to(dtype), kernel.to(dtype)
            if ctx.neighbourhoods:
                out = (_neighbourhoods(x, kmap) @ w.view(-1, out_channels)).to(sum_dtype)
            else:
                out = x.new_zeros(kmap.num_out, out_channels, dtype=sum_dtype)
                for group in kmap.groups(_max_pairs(out_channels, dtype)):
                    first, last, segments = group
                    products = x.new_empty(last - first, out_channels)
                    for k, start, stop in segments:
                        torch.mm(x.index_select(0, kmap.in_rows[start:stop]), w[k],
                                 out=products[start - first:stop - first])
                    out += torch.sparse.mm(kmap.to_outputs(group, sum_dtype), products.to(sum_dtype))
                if kmap.identity is not None:
                    out += x @ w[kmap.identity]
        ctx.save_for_backward(features, kernel)
        ctx.kmap = kmap
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        with torch.autocast(grad_out.device.type, enabled=False):  # in float32 also when called under autocast
            return SparseConvolution._gradients(ctx, grad_out)

    @staticmethod
    def _gradients(ctx, grad_out: torch.Tensor):
        features, kernel = ctx.saved_tensors
        kmap = ctx.kmap
        features = features.to(grad_out.dtype)
        kernel_t = kernel.to(grad_out.dtype).transpose(1, 2)
        need_features, need_kernel = ctx.needs_input_grad[:2]
        per_offset_kernel_grad = need_kernel and not ctx.neighbourhoods
        grad_features = torch.zeros_like(features) if need_features else None
        grad_kernel = None
        if need_kernel:
            if ctx.neighbourhoods:
                grad_kernel = (_neighbourhoods(features, kmap).T @ grad_out).view_as(kernel)
            else:
                grad_kernel = torch.zeros_like(kernel)
        if per_offset_kernel_grad or need_features:
            for group in kmap.groups(_max_pairs(kernel.shape[1], grad_out.dtype)):
                first, last, segments = group
                products = grad_out.new_empty(last - first, kernel.shape[1]) if need_features else None
                for k, start, stop in segments:
                    g = grad_out.index_select(0, kmap.out_rows[start:stop])
                    if per_offset_kernel_grad:
                        grad_kernel[k] = features.index_select(0, kmap.in_rows[start:stop]).T @ g
                    if need_features:
                        torch.mm(g, kernel_t[k], out=products[start - first:stop - first])
                if need_features:
                    grad_features += torch.sparse.mm(kmap.to_inputs(group, products.dtype), products)
        if kmap.identity is not None:
            if per_offset_kernel_grad:
                grad_kernel[kmap.identity] = features.T @ grad_out
            if need_features:
                grad_features += grad_out @ kernel_t[kmap.identity]
        return grad_features, grad_kernel, None


def sparse_convolution(features: torch.Tensor, kernel: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    return SparseConvolution.apply(features, kernel, kmap)
