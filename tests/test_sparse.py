"""Sparse backend against dense torch convolutions (values and gradients, float64), maps, and the U-Net."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from lgseg.models import Res16UNet, parameter_count
from lgseg.sparse import get_backend
from lgseg.sparse import functional as sparse_functional
from lgseg.sparse.functional import SparseConvolution as SparseConvolutionFunction
from lgseg.sparse.tensor import CoordinateManager, SparseTensor, kernel_offsets
from lgseg.sparse.torch_backend import SparseConvolution

GRID = 6
HAS_MINKOWSKI = importlib.util.find_spec("MinkowskiEngine") is not None


def _random_grid(seed, channels, occupancy=0.4, grid=GRID):
    g = torch.Generator().manual_seed(seed)
    active = torch.nonzero(torch.rand(grid, grid, grid, generator=g) < occupancy)
    coords = torch.cat([torch.zeros(len(active), 1, dtype=torch.long), active], 1)
    features = torch.randn(len(active), channels, generator=g, dtype=torch.float64)
    return coords, features


def _dense(coords, features, grid=GRID, stride=1):
    dense = torch.zeros(1, features.shape[1], grid, grid, grid, dtype=features.dtype)
    x, y, z = (coords[:, 1:] // stride).T
    dense[0, :, x, y, z] = features.T
    return dense


def _at(dense, coords, stride=1):
    x, y, z = (coords[:, 1:] // stride).T
    return dense[0, :, x, y, z].T


def _kernel_from_dense(weight, transpose=False):
    """Dense weight (C_out, C_in, kx, ky, kz) [or (C_in, C_out, ...) transposed] -> our (K, C_in, C_out), x fastest."""
    order = (4, 3, 2, 0, 1) if transpose else (4, 3, 2, 1, 0)
    k = weight.shape[2]
    return weight.permute(*order).reshape(k ** 3, weight.shape[0 if transpose else 1],
                                          weight.shape[1 if transpose else 0]).contiguous()


def test_kernel_order_is_minkowski_order():
    offsets = kernel_offsets(3, tensor_stride=1)
    for j, (dx, dy, dz) in enumerate(offsets.tolist()):
        assert j == (dz + 1) * 9 + (dy + 1) * 3 + (dx + 1)
    assert kernel_offsets(2, tensor_stride=4).tolist()[:3] == [[0, 0, 0], [4, 0, 0], [0, 4, 0]]


@pytest.mark.parametrize("in_channels, out_channels", [(2, 3), (1, 8)])  # per-offset products; neighbourhoods
def test_submanifold_conv_matches_dense_conv3d_values_and_gradients(in_channels, out_channels):
    coords, features = _random_grid(0, in_channels)
    weight = torch.randn(out_channels, in_channels, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    features.requires_grad_(True)
    dense_in = _dense(coords, features)
    dense_out = _at(F.conv3d(dense_in, weight, padding=1), coords)
    conv = SparseConvolution(in_channels, out_channels, kernel_size=3).double()
    with torch.no_grad():
        conv.kernel.copy_(_kernel_from_dense(weight.detach()))
    sparse_out = conv(SparseTensor.from_coords(coords, features)).features
    torch.testing.assert_close(sparse_out, dense_out, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(dense_out)
    grad_f_dense, grad_w_dense = torch.autograd.grad((dense_out * upstream).sum(), [features, weight])
    grad_f_sparse, grad_k_sparse = torch.autograd.grad((sparse_out * upstream).sum(), [features, conv.kernel])
    torch.testing.assert_close(grad_f_sparse, grad_f_dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_k_sparse, _kernel_from_dense(grad_w_dense), rtol=1e-12, atol=1e-12)


def test_strided_and_transposed_conv_match_dense_values_and_gradients():
    coords, features = _random_grid(1, 2)
    features.requires_grad_(True)
    w_down = torch.randn(4, 2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    w_up = torch.randn(4, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)  # (C_in, C_out, ...)
    down = SparseConvolution(2, 4, kernel_size=2, stride=2).double()
    up = SparseConvolution(4, 3, kernel_size=2, stride=2, transpose=True).double()
    with torch.no_grad():
        down.kernel.copy_(_kernel_from_dense(w_down.detach()))
        up.kernel.copy_(_kernel_from_dense(w_up.detach(), transpose=True))
    coarse = down(SparseTensor.from_coords(coords, features))
    fine = up(coarse)
    assert coarse.stride == 2 and fine.stride == 1 and torch.equal(fine.coords, coords)
    dense_coarse = F.conv3d(_dense(coords, features), w_down, stride=2)
    torch.testing.assert_close(coarse.features, _at(dense_coarse, coarse.coords, stride=2), rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(dense_coarse.abs().sum(1)) == len(coarse.coords)  # no coarse voxel missing
    dense_fine = F.conv_transpose3d(dense_coarse, w_up, stride=2)
    torch.testing.assert_close(fine.features, _at(dense_fine, coords), rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(fine.features)
    grads_sparse = torch.autograd.grad((fine.features * upstream).sum(), [features, down.kernel, up.kernel])
    grads_dense = torch.autograd.grad((_at(dense_fine, coords) * upstream).sum(), [features, w_down, w_up])
    torch.testing.assert_close(grads_sparse[0], grads_dense[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads_sparse[1], _kernel_from_dense(grads_dense[1]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads_sparse[2], _kernel_from_dense(grads_dense[2], transpose=True), rtol=1e-12,
                               atol=1e-12)


def test_pointwise_conv_with_bias_is_a_linear_map():
    coords, features = _random_grid(2, 5)
    conv = SparseConvolution(5, 7, kernel_size=1, bias=True).double()
    assert conv.kernel.shape == (5, 7) and conv.bias.shape == (1, 7)
    out = conv(SparseTensor.from_coords(coords, features)).features
    torch.testing.assert_close(out, features @ conv.kernel + conv.bias)


@pytest.mark.parametrize("in_channels, out_channels, kernel_size, stride", [(2, 3, 3, 1), (1, 4, 3, 1),
                                                                          (2, 3, 2, 2), (3, 2, 3, 2)])
def test_gradcheck_of_the_custom_function(in_channels, out_channels, kernel_size, stride):
    coords, features = _random_grid(3, in_channels, grid=4)
    manager = CoordinateManager(coords)
    kmap = manager.kernel_map(1, manager.downsampled(1, stride) if stride > 1 else 1, kernel_size)
    kernel = torch.randn(kernel_size ** 3, in_channels, out_channels, dtype=torch.float64, requires_grad=True)
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f, k: SparseConvolutionFunction.apply(f, k, kmap), (features, kernel))


def _brute_force_pairs(source, target, offsets):
    """Per offset the (source row, target row) pairs with target + offset == source, by comparing every pair."""
    pairs = []
    for offset in offsets:
        shifted = target.clone()
        shifted[:, 1:] += offset
        equal = (shifted[:, None, :] == source[None, :, :]).all(2)
        out_rows, in_rows = torch.nonzero(equal, as_tuple=True)
        pairs.append(sorted(zip(in_rows.tolist(), out_rows.tolist())))
    return pairs


@pytest.mark.parametrize("kernel_size, stride, dilation", [(3, 1, 1), (3, 1, 2), (5, 1, 1), (2, 1, 1), (2, 2, 1),
                                                           (3, 2, 1)])
def test_kernel_maps_equal_brute_force_pairs(kernel_size, stride, dilation):
    coords, _ = _random_grid(5, 1, occupancy=0.35, grid=7)
    coords[:, 0] = torch.arange(len(coords)) % 2  # two batch items: never neighbours of each other
    manager = CoordinateManager(coords)
    out_stride = manager.downsampled(1, stride) if stride > 1 else 1
    kmap = manager.kernel_map(1, out_stride, kernel_size, dilation)
    offsets = kernel_offsets(kernel_size, 1, dilation)
    expected = _brute_force_pairs(coords, manager.coords(out_stride), offsets)
    listed = {k: sorted(zip(kmap.in_rows[a:b].tolist(), kmap.out_rows[a:b].tolist()))
              for k, a, b in kmap.segments}
    for k, pairs in enumerate(expected):
        if k == kmap.identity:
            assert pairs == [(i, i) for i in range(len(coords))] and k not in listed
        else:
            assert listed.get(k, []) == pairs
    table = kmap.neighbour_table()
    for k, pairs in enumerate(expected):
        column = torch.full((kmap.num_out,), kmap.num_in)
        for i, o in pairs:
            column[o] = i
        assert torch.equal(table[:, k], column)
    flipped = kmap.transposed()
    assert torch.equal(flipped.in_rows, kmap.out_rows) and flipped.transposed() is kmap
    assert (flipped.num_in, flipped.num_out) == (kmap.num_out, kmap.num_in)


def test_scatter_matrices_sum_pair_rows_into_their_rows():
    coords, _ = _random_grid(6, 1, grid=5)
    kmap = CoordinateManager(coords).kernel_map(1, 1, 3)
    values = torch.randn(kmap.num_pairs, 2, dtype=torch.float64)
    for start, stop, segments in kmap.groups(50) + kmap.groups(kmap.num_pairs):
        group = (start, stop, segments)
        for matrix, rows, count in [(kmap.to_outputs(group, torch.float64), kmap.out_rows, kmap.num_out),
                                    (kmap.to_inputs(group, torch.float64), kmap.in_rows, kmap.num_in)]:
            expected = torch.zeros(count, 2, dtype=torch.float64).index_add_(0, rows[start:stop], values[start:stop])
            torch.testing.assert_close(torch.sparse.mm(matrix, values[start:stop]), expected)


def test_coordinates_beyond_the_key_range_with_the_kernel_reach_are_an_error():
    limit = 1 << 17
    coords = torch.tensor([[0, limit - 1, 0, 0], [0, limit - 2, 0, 0]])
    manager = CoordinateManager(coords)  # in range by themselves
    with pytest.raises(ValueError, match="out of range"):
        manager.kernel_map(1, 1, 3)


def test_mixed_precision_on_cpu_runs_in_bfloat16_and_stays_close_to_float32():
    backend = get_backend("torch")
    torch.manual_seed(4)
    model = Res16UNet(backend, "Res16UNet14Tiny", num_classes=5)
    coords, features = _scene(seed=3)
    reference = model(backend.input_tensor(coords, features)).features
    reference.square().mean().backward()
    reference_grad = model.conv0p1s1.kernel.grad.clone()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model(backend.input_tensor(coords, features)).features
        mixed.float().square().mean().backward()  # backward under autocast too: its sums stay float32
    assert torch.linalg.norm(mixed.float() - reference) / torch.linalg.norm(reference) < 0.05
    assert mixed.dtype == torch.float32  # sums of bfloat16 products are accumulated in float32
    assert F.cosine_similarity(model.conv0p1s1.kernel.grad.flatten(), reference_grad.flatten(), dim=0) > 0.98


def test_stride_maps_round_trip():
    coords, _ = _random_grid(4, 1, occupancy=0.3, grid=8)
    coords[:, 0] = torch.arange(len(coords)) % 2  # two batch items
    manager = CoordinateManager(coords)
    coarse_stride = manager.downsampled(1, 2)
    coarse = manager.coords(coarse_stride)
    expected = torch.unique(torch.cat([coords[:, :1], coords[:, 1:] // 2 * 2], 1), dim=0)
    assert torch.equal(coarse, expected)
    kmap = manager.kernel_map(1, coarse_stride, 2)
    fine_rows, coarse_rows = kmap.in_rows, kmap.out_rows
    assert torch.equal(torch.sort(fine_rows).values, torch.arange(len(coords)))  # every fine voxel exactly once
    parent = torch.cat([coords[fine_rows, :1], coords[fine_rows, 1:] // 2 * 2], 1)
    assert torch.equal(parent, coarse[coarse_rows])  # ... mapped to its own parent, within its batch item
    assert manager.downsampled(1, 2) == 2 and manager.coords(2) is coarse  # cached


def _scene(n=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.unique(torch.randint(0, 40, (n, 3), generator=g), dim=0)
    coords = torch.cat([torch.randint(0, 2, (len(coords), 1), generator=g), coords], 1)
    coords = torch.unique(coords, dim=0)
    return coords, torch.randn(len(coords), 3, generator=g)


@pytest.mark.parametrize("variant, feature_dim, width", [("Res16UNet14Tiny", None, 16), ("Res16UNet34C", None, 96),
                                                         ("Res16UNet14Tiny", 384, 384)])
def test_unet_output_width_and_no_final_relu(variant, feature_dim, width):
    backend = get_backend("torch")
    torch.manual_seed(0)
    model = Res16UNet(backend, variant, feature_dim=feature_dim)
    coords, features = _scene()
    out = model(backend.input_tensor(coords, features))
    assert out.features.shape == (len(coords), width) and torch.equal(out.coords, coords)
    assert out.features.min() < 0  # no ReLU on the last block
    logits = Res16UNet(backend, variant, num_classes=200)(backend.input_tensor(coords, features))
    assert logits.features.shape == (len(coords), 200)


def test_a_feature_width_other_than_the_last_plane_adds_a_linear_projection():
    backend = get_backend("torch")
    assert Res16UNet(backend, "Res16UNet34D", feature_dim=512).projection is None  # CLIP width = last plane
    torch.manual_seed(0)
    model = Res16UNet(backend, "Res16UNet14Tiny", feature_dim=384)
    assert tuple(model.projection.kernel.shape) == (16, 384)
    coords, features = _scene()
    x = backend.input_tensor(coords, features)
    projected = model(x).features
    projection, model.projection = model.projection, None
    trunk = model(x).features  # the last block's 16 features
    torch.testing.assert_close(projected, trunk @ projection.kernel + projection.bias)


def test_res16unet34c_has_the_known_parameter_count():
    model = Res16UNet(get_backend("torch"), "Res16UNet34C", num_classes=20)
    assert sum(p.numel() for p in model.parameters()) == 37_846_644  # MinkUNet34C, 3 in / 20 out


def _hand_parameter_count(planes, layers, classes=200, init=32, channels=3):
    """Parameters of the Res16UNet layout counted from its definition: a k^3 convolution in -> out has k^3 * in * out
    weights (no bias), a batch norm 2 * out, a residual block two 3^3 convolutions + norms and a 1^3 projection
    where the width changes, the head out * classes + classes."""
    def block(n_in, n_out):
        return 27 * n_in * n_out + 27 * n_out * n_out + 4 * n_out + ((n_in * n_out + 2 * n_out) if n_in != n_out else 0)

    def stage(n_in, n_out, blocks):
        return block(n_in, n_out) + (blocks - 1) * block(n_out, n_out)

    total = 27 * channels * init + 2 * init
    widths = [init, *planes[:3]]
    for i in range(4):  # strided 2^3 convolution + norm, then the stage
        total += 8 * widths[i] ** 2 + 2 * widths[i] + stage(widths[i], planes[i], layers[i])
    ups_in, skips = [planes[3], planes[4], planes[5], planes[6]], [planes[2], planes[1], planes[0], init]
    for i in range(4):  # transposed 2^3 convolution + norm, then the stage on [up, skip]
        total += 8 * ups_in[i] * planes[4 + i] + 2 * planes[4 + i] + stage(planes[4 + i] + skips[i], planes[4 + i],
                                                                             layers[4 + i])
    return total + planes[7] * classes + classes


def test_table3_backbone_has_the_stated_parameter_count():
    """Res16UNet18C, the Res16UNet variant closest to the supplement's 20M: 21.7M with the 200-class head (README,
    docs/method.md §9), counted by hand from its layout; the hand count also gives MinkUNet34C's known figure."""
    assert _hand_parameter_count((32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2), classes=20) \
        == 37_846_644
    hand = _hand_parameter_count((32, 64, 128, 256, 256, 128, 96, 96), (2,) * 8)
    assert parameter_count("Res16UNet18C") == hand == 21_712_296
    assert abs(hand - 20e6) < abs(parameter_count("Res16UNet34C") - 20e6)  # nearer 20M than the next larger variant


def test_checkpoint_round_trip_reproduces_outputs(tmp_path):
    backend = get_backend("torch")
    torch.manual_seed(1)
    model = Res16UNet(backend, "Res16UNet14Tiny", num_classes=5).eval()
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = Res16UNet(backend, "Res16UNet14Tiny", num_classes=5).eval()
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    coords, features = _scene(seed=2)
    torch.testing.assert_close(fresh(backend.input_tensor(coords, features)).features,
                               model(backend.input_tensor(coords, features)).features)


def test_unknown_backend_and_variant_are_clear_errors():
    with pytest.raises(ValueError, match="unknown sparse backend 'spconv'"):
        get_backend("spconv")
    with pytest.raises(ValueError, match="unknown model variant 'Res99'"):
        Res16UNet(get_backend("torch"), "Res99")


@pytest.mark.skipif(not HAS_MINKOWSKI, reason="MinkowskiEngine is not installed (bash envs/install_minkowski.sh)")
@pytest.mark.parametrize("variant", ["Res16UNet14Tiny", "Res16UNet34C"])
def test_whole_network_agrees_with_minkowski_engine(variant):
    ours, theirs = get_backend("torch"), get_backend("minkowski")
    torch.manual_seed(3)
    model_ours = Res16UNet(ours, variant, num_classes=7).double().eval()
    model_me = Res16UNet(theirs, variant, num_classes=7).double().eval()
    state = model_ours.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in model_me.state_dict().items()}
    model_me.load_state_dict(state)
    coords, features = _scene(n=2000, seed=4)
    features = features.double()
    out_ours = model_ours(ours.input_tensor(coords, features))
    out_me = model_me(theirs.input_tensor(coords, features))
    me_coords = theirs.coordinates(out_me).long()
    order = torch.argsort(_keys(me_coords))
    ours_order = torch.argsort(_keys(coords))
    torch.testing.assert_close(theirs.features(out_me)[order], out_ours.features[ours_order], rtol=1e-9, atol=1e-9)


def _keys(coords):
    return ((coords[:, 0] * 1000 + coords[:, 1]) * 1000 + coords[:, 2]) * 1000 + coords[:, 3]


@pytest.mark.skipif(not HAS_MINKOWSKI, reason="MinkowskiEngine is not installed (bash envs/install_minkowski.sh)")
def test_training_rows_line_up_with_labels_on_both_backends():
    """The loss pairs output row i with label i. Both backends give the same rows for the same batch (in a shuffled
    input order), so the same loss and gradients; MinkowskiBackend.output_features maps rows by coordinates."""
    from lgseg.evaluate.inference import network_outputs

    ours, theirs = get_backend("torch"), get_backend("minkowski")
    coords, features = _scene(n=2500, seed=7)
    order = torch.randperm(len(coords), generator=torch.Generator().manual_seed(8))
    batch = {"coords": coords[order], "features": features[order].double()}
    labels = torch.randint(-1, 7, (len(coords),), generator=torch.Generator().manual_seed(9))
    torch.manual_seed(3)
    model_ours = Res16UNet(ours, "Res16UNet14Tiny", num_classes=7).double()
    model_me = Res16UNet(theirs, "Res16UNet14Tiny", num_classes=7).double()
    model_me.load_state_dict(model_ours.state_dict())
    losses = []
    for backend, model in ((ours, model_ours), (theirs, model_me)):
        logits = network_outputs(model, backend, batch, torch.device("cpu"))["features"]
        loss = F.cross_entropy(logits, labels, ignore_index=-1)
        loss.backward()
        losses.append((logits, loss, model.final.kernel.grad.clone(), model.conv0p1s1.kernel.grad.clone()))
    for a, b in zip(*losses):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)

    # rows of a tensor made from another order of the same coordinates come back in the asked order
    tensor = theirs.input_tensor(coords, features.double())
    torch.testing.assert_close(theirs.output_features(tensor, coords[order]), features.double()[order])


def test_groups_of_offsets_bound_the_products_and_give_the_same_convolution(monkeypatch):
    coords, features = _random_grid(7, 2)
    kmap = CoordinateManager(coords).kernel_map(1, 1, 3)
    groups = kmap.groups(40)
    assert [segment for _, _, segments in groups for segment in segments] == kmap.segments  # all, in order
    for start, stop, segments in groups:
        assert (start, stop) == (segments[0][1], segments[-1][2])
        assert stop - start <= 40 or len(segments) == 1
    features.requires_grad_(True)
    conv = SparseConvolution(2, 3, kernel_size=3).double()
    x = SparseTensor.from_coords(coords, features)
    upstream = torch.randn(len(coords), 3, dtype=torch.float64)
    whole = conv(x).features
    whole_grads = torch.autograd.grad((whole * upstream).sum(), [features, conv.kernel])
    monkeypatch.setattr(sparse_functional, "PRODUCTS_BYTES", 8 * 3 * 40)  # 40 pairs of 3 float64 per group
    grouped = conv(x).features
    grouped_grads = torch.autograd.grad((grouped * upstream).sum(), [features, conv.kernel])
    assert len(kmap.groups(sparse_functional._max_pairs(3, torch.float64))) > 3
    torch.testing.assert_close(grouped, whole, rtol=1e-12, atol=1e-12)
    for a, b in zip(grouped_grads, whole_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
