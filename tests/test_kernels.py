"""Every jitted kernel against its NumPy reference, on fresh random data and the edge cases the models hit."""

import numpy as np
import pytest
from tinyvit_engine.kernels import FAST, GELU, NONE, REFERENCE, RELU, SILU, KernelArgumentError
from tinyvit_engine.kernels import pack as FAST_PACK

RTOL = 1e-5  # float32 sums in a different order: a few ulps of the largest term


def close(fast, ref):
    assert fast.shape == ref.shape and fast.dtype == np.float32
    np.testing.assert_allclose(fast, ref, rtol=RTOL, atol=RTOL * max(1.0, float(np.abs(ref).max())))


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize(
    "B, H, W, cin, cout, k, stride, dil",
    [
        (1, 8, 8, 3, 16, 3, 2, 1),  # the stem
        (2, 7, 9, 6, 5, 3, 1, 1),  # odd, non-square, batch 2
        (1, 5, 6, 4, 4, 3, 1, 6),  # dilation larger than the map: most taps read padding
        (1, 9, 9, 2, 3, 5, 2, 2),
        (2, 4, 4, 3, 2, 1, 1, 1),
        (1, 6, 5, 3, 4, 2, 1, 1),  # an even kernel
        (2, 9, 11, 16, 40, 3, 1, 1),  # deep: wide, narrow and partial weight panels, bands of rows
        (1, 12, 10, 24, 33, 3, 1, 2),  # dilated and deep: tap rows clipped per output row
        (1, 13, 9, 8, 48, 3, 2, 1),
    ],
)
@pytest.mark.parametrize("act", [NONE, SILU, RELU])
def test_conv2d(rng, B, H, W, cin, cout, k, stride, dil, act):
    x, w, b = rand(rng, B, H, W, cin), rand(rng, k, k, cin, cout), rand(rng, cout)
    pad = (k - 1) // 2 * dil
    close(FAST.conv2d(x, w, b, stride, pad, dil, act), REFERENCE.conv2d(x, w, b, stride, pad, dil, act))


@pytest.mark.parametrize(
    "B, H, W, C, k, stride, dil",
    [
        (1, 8, 8, 16, 3, 2, 1),
        (2, 7, 9, 5, 3, 1, 1),
        (1, 9, 7, 8, 3, 2, 1),
        (1, 4, 5, 3, 3, 1, 2),
        (2, 6, 6, 4, 5, 1, 3),
        (2, 9, 11, 24, 3, 1, 1),  # the register tiles: blocks of 16 then 8 channels (or three of 8), borders clipped
        (1, 9, 10, 44, 3, 1, 1),  # 16-channel blocks, an 8-channel one and 4 remainder channels
        (1, 10, 9, 20, 3, 2, 1),  # tile blocks plus 4 remainder channels, stride 2
        (1, 12, 12, 16, 3, 1, 2),  # dilated tile
        (1, 3, 3, 8, 3, 1, 1),  # a map with no interior pixel
    ],
)
def test_depthwise_conv2d(rng, B, H, W, C, k, stride, dil):
    x, w, b = rand(rng, B, H, W, C), rand(rng, k, k, C), rand(rng, C)
    pad = (k - 1) // 2 * dil
    close(
        FAST.depthwise_conv2d(x, w, b, stride, pad, dil, SILU),
        REFERENCE.depthwise_conv2d(x, w, b, stride, pad, dil, SILU),
    )


@pytest.mark.parametrize("M, K, N", [(1, 3, 5), (4, 8, 8), (7, 16, 33), (130, 40, 24), (50, 70, 80), (3, 1, 48)])
@pytest.mark.parametrize("act", [NONE, SILU, GELU])
def test_linear(rng, M, K, N, act):
    x, w, b, r = rand(rng, M, K), rand(rng, K, N), rand(rng, N), rand(rng, M, N)
    close(FAST.linear(x, w, b, act), REFERENCE.linear(x, w, b, act))
    close(FAST.linear(x, w, None, act, r), REFERENCE.linear(x, w, None, act, r))


def test_pointwise_conv2d(rng):
    x, w, b, r = rand(rng, 2, 5, 7, 6), rand(rng, 6, 9), rand(rng, 9), rand(rng, 2, 5, 7, 9)
    close(FAST.pointwise_conv2d(x, w, b, SILU, r), REFERENCE.pointwise_conv2d(x, w, b, SILU, r))
    with pytest.raises(KernelArgumentError, match="residual"):
        FAST.pointwise_conv2d(x, w, b, SILU, rand(rng, 2, 7, 5, 9))


@pytest.mark.parametrize("M, C", [(1, 4), (33, 64), (5, 240)])
def test_layer_norm(rng, M, C):
    x = rand(rng, M, C) * 3 + 1
    g, b = rand(rng, C), rand(rng, C)
    close(FAST.layer_norm(x, g, b, 1e-5), REFERENCE.layer_norm(x, g, b, 1e-5))


@pytest.mark.parametrize(
    "T, N, C, heads",
    [(4, 16, 8, 4), (8, 1, 12, 3), (4, 70, 24, 4), (2, 5, 6, 1), (2, 37, 108, 3), (1, 29, 80, 4), (1, 301, 16, 2)],
)
def test_attention(rng, T, N, C, heads):
    qkv = rand(rng, T, N, 3 * C) * 2
    close(FAST.attention(qkv, heads), REFERENCE.attention(qkv, heads))


def test_attention_matches_softmax_definition(rng):
    # one head, one query: the weights of the values are softmax(q.k / sqrt(D))
    q, k, v = rand(rng, 1, 4), rand(rng, 3, 4), rand(rng, 3, 4)
    qkv = np.concatenate([np.concatenate([q, q, q]), k, v], axis=1)[None]
    s = k @ q[0] / 2.0
    expected = (np.exp(s) / np.exp(s).sum()) @ v
    np.testing.assert_allclose(FAST.attention(qkv, 1)[0, 0], expected, rtol=1e-5)


@pytest.mark.parametrize(
    "B, H, W, C, ph, pw", [(1, 4, 4, 3, 2, 2), (2, 6, 8, 5, 2, 2), (1, 6, 6, 2, 3, 3), (2, 4, 6, 3, 1, 2)]
)
def test_unfold_fold(rng, B, H, W, C, ph, pw):
    x = rand(rng, B, H, W, C)
    t = FAST.unfold(x, ph, pw)
    close(t, REFERENCE.unfold(x, ph, pw))
    np.testing.assert_array_equal(FAST.fold(t, ph, pw, H, W), x)
    np.testing.assert_array_equal(REFERENCE.fold(t, ph, pw, H, W), x)


@pytest.mark.parametrize("H, W", [(5, 4), (4, 7), (7, 9)])
def test_unfold_drops_and_fold_zeroes_a_last_odd_row(rng, H, W):
    # nn.functional.unfold/fold semantics, which MobileViTV2 keeps for odd maps
    x = rand(rng, 2, H, W, 3)
    t = FAST.unfold(x, 2, 2)
    close(t, REFERENCE.unfold(x, 2, 2))
    back = FAST.fold(t, 2, 2, H, W)
    np.testing.assert_array_equal(back, REFERENCE.fold(t, 2, 2, H, W))
    h, w = H // 2 * 2, W // 2 * 2
    np.testing.assert_array_equal(back[:, :h, :w], x[:, :h, :w])
    assert not back[:, h:].any() and not back[:, :, w:].any()


@pytest.mark.parametrize("B, L, C", [(1, 4, 3), (2, 33, 16), (3, 7, 40)])
def test_group_norm(rng, B, L, C):
    x = rand(rng, B, L, C) * 2 + 0.5
    g, b = rand(rng, C), rand(rng, C)
    close(FAST.group_norm(x, g, b, 1e-5), REFERENCE.group_norm(x, g, b, 1e-5))


def test_norms_keep_their_digits_far_from_zero(rng):
    # rows around 1e4 with a spread of 1e-2: one-pass statistics without the shift (E[x^2] - E[x]^2) would cancel
    # most of the variance's digits; the normalised values must still match the two-pass float64 reference
    x = (1e4 + rng.standard_normal((3, 70, 48)) * 1e-2).astype(np.float32)
    g, b = rand(rng, 48), rand(rng, 48)
    close(FAST.layer_norm(x.reshape(-1, 48), g, b, 1e-5), REFERENCE.layer_norm(x.reshape(-1, 48), g, b, 1e-5))
    close(FAST.group_norm(x, g, b, 1e-5), REFERENCE.group_norm(x, g, b, 1e-5))


@pytest.mark.parametrize("T, N, C", [(1, 1, 1), (4, 16, 8), (8, 49, 24)])
def test_linear_attention(rng, T, N, C):
    qkv = rand(rng, T, N, 1 + 2 * C) * 2
    close(FAST.linear_attention(qkv), REFERENCE.linear_attention(qkv))


def test_unfold_matches_transformers_order(rng):
    # transformers: (B, C, H, W) -> reshape(B, C, NH, 2, NW, 2).transpose(0, 3, 5, 2, 4, 1).reshape(B * 4, N, C)
    nchw = rand(rng, 2, 3, 4, 6)
    expected = nchw.reshape(2, 3, 2, 2, 3, 2).transpose(0, 3, 5, 2, 4, 1).reshape(8, 6, 3)
    np.testing.assert_array_equal(FAST.unfold(np.ascontiguousarray(nchw.transpose(0, 2, 3, 1)), 2, 2), expected)


@pytest.mark.parametrize(
    "shape, size", [((1, 7, 7, 3), (8, 8)), ((2, 8, 8, 4), (7, 7)), ((1, 5, 9, 2), (6, 10)), ((1, 1, 1, 3), (4, 2))]
)
def test_resize_bilinear(rng, shape, size):
    x = rand(rng, *shape)
    close(FAST.resize_bilinear(x, *size), REFERENCE.resize_bilinear(x, *size))


def test_resize_same_size_is_identity(rng):
    x = rand(rng, 2, 5, 6, 3)
    np.testing.assert_array_equal(FAST.resize_bilinear(x, 5, 6), x)


def test_global_avg_pool(rng):
    x = rand(rng, 3, 5, 7, 11)
    close(FAST.global_avg_pool(x), REFERENCE.global_avg_pool(x))


@pytest.mark.parametrize("act", [NONE, SILU, RELU, GELU])
def test_activation(rng, act):
    x = rand(rng, 3, 50) * 5
    close(FAST.activation(x, act), REFERENCE.activation(x, act))


def test_wrappers_refuse_bad_arrays(rng):
    x, w = rand(rng, 1, 4, 4, 3), rand(rng, 3, 3, 3, 2)
    with pytest.raises(KernelArgumentError, match="float32"):
        FAST.conv2d(x.astype(np.float64), w, None, 1, 1)
    with pytest.raises(KernelArgumentError, match="input channels"):
        FAST.conv2d(x, rand(rng, 3, 3, 4, 2), None, 1, 1)
    with pytest.raises(KernelArgumentError, match="too small"):
        FAST.conv2d(x[:, :1, :1], w, None, 1, 0)
    with pytest.raises(KernelArgumentError, match="contiguous"):
        FAST.depthwise_conv2d(x[:, :, ::2], rand(rng, 3, 3, 3), None, 1, 1)
    with pytest.raises(KernelArgumentError, match="heads"):
        FAST.attention(rand(rng, 2, 3, 12), 3)


def test_generated_tiles_are_current():
    # kernels/_tiles.py is what kernels/_tilegen.py generates (regenerate with `python kernels/_tilegen.py --write`)
    from tinyvit_engine.kernels import _tilegen

    assert _tilegen.TARGET.read_text() == _tilegen.source()


@pytest.mark.parametrize(
    "M, K, N, am, om, rows, k0, k1",
    [
        (10, 20, 37, 0, 0, 10, 0, 20),
        (9, 33, 64, 2, 1, 7, 5, 30),
        (4, 8, 16, 1, 0, 2, 0, 8),
        (13, 17, 50, 0, 3, 9, 9, 9),
    ],
)
def test_gemm(rng, M, K, N, am, om, rows, k0, k1):
    # the shared product on a block of rows, a range of the depth, offsets into both matrices, partial panels
    from tinyvit_engine.kernels import _gemm

    a, w, b = rand(rng, M, K), rand(rng, K, N), rand(rng, N)
    wp, bp = _gemm.pack(w, b)
    np.testing.assert_array_equal(_gemm.unpack(wp, N), w)
    out, expected = np.full((M + 3, N + 2), 7.0, np.float32), np.full((M + 3, N + 2), 7.0, np.float32)
    for x in (a, wp, bp):  # gemm has one signature: its inputs read-only (kernels convert; Python calls cannot)
        x.flags.writeable = False
    _gemm.gemm(a, am, wp, bp, out, om, rows, k0, k1, N)
    _gemm.gemm_reference(a, am, wp, bp, expected, om, rows, k0, k1, N)
    close(out, expected)


def test_packed_weights_are_checked(rng):
    x, w = rand(rng, 5, 8), rand(rng, 8, 20)
    wp, bp = FAST_PACK(w, None)
    np.testing.assert_allclose(FAST.linear(x, w, None, NONE, None, (wp, bp)), x @ w, rtol=1e-5, atol=1e-5)
    with pytest.raises(KernelArgumentError, match="packed weight"):
        FAST.linear(x, w, None, NONE, None, (wp[:, :4], bp))
    with pytest.raises(KernelArgumentError, match="packed bias"):
        FAST.linear(x, w, None, NONE, None, (wp, bp.astype(np.float64)))


@pytest.mark.parametrize(
    "B, H, W, cin, mid, cout, stride",
    [(1, 9, 11, 16, 32, 16, 1), (2, 8, 7, 12, 24, 20, 2), (1, 5, 4, 3, 20, 3, 1), (1, 1, 1, 8, 16, 8, 1)],
)
def test_inverted_residual(rng, B, H, W, cin, mid, cout, stride):
    # the fused block against the composition of the unfused references, with and without the residual
    x, we, be = rand(rng, B, H, W, cin), rand(rng, cin, mid), rand(rng, mid)
    wd, bd, wr, br = rand(rng, 3, 3, mid), rand(rng, mid), rand(rng, mid, cout) * 0.3, rand(rng, cout)
    ho, wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    for residual in (None, rand(rng, B, ho, wo, cout)):
        args = (x, we, be, wd, bd, wr, br, stride, SILU, residual)
        close(FAST.inverted_residual(*args), REFERENCE.inverted_residual(*args))
