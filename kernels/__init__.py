"""The kernel library: one op per file, each a plain NumPy reference beside a Numba kernel with the same signature.

Every kernel takes and returns channels-last float32 arrays ((B, H, W, C) maps, (M, C) rows, (T, N, C) tokens).
`FAST` and `REFERENCE` hold the two implementations of every op under the same names, so an executor can run a whole
model on either (the reference set is for reading, teaching and bisecting; the tests hold the two to each other).

One op is not a model's: preprocess.py is the image processor's pixel work (Pillow's resize, crop, rescale, flip),
uint8 (H, W, 3) in, float32 (3, h, w) out, held bit for bit to Pillow and to its own reference.
"""

if __name__ == "kernels":  # found by the bare name from a clone's root: that name is another package's (_bare.py)
    from ._bare import step_aside

    step_aside()
else:
    from types import SimpleNamespace

    from ._checks import KernelArgumentError
    from ._gemm import pack
    from ._launch import Recorder, launch, output, recording
    from .activation import GELU, NONE, RELU, SILU, activation, activation_reference
    from .activation import code as activation_code
    from .attention import attention, attention_reference
    from .conv2d import conv2d, conv2d_reference
    from .depthwise_conv2d import depthwise_conv2d, depthwise_conv2d_reference
    from .group_norm import group_norm, group_norm_reference
    from .inverted_residual import inverted_residual, inverted_residual_reference
    from .layer_norm import layer_norm, layer_norm_reference
    from .linear import linear, linear_reference
    from .linear_attention import linear_attention, linear_attention_reference
    from .pointwise_conv2d import pointwise_conv2d, pointwise_conv2d_reference
    from .pool import global_avg_pool, global_avg_pool_reference
    from .resize import resize_bilinear, resize_bilinear_reference
    from .unfold import fold, fold_reference, unfold, unfold_reference

    OPS = (
        "activation",
        "attention",
        "conv2d",
        "depthwise_conv2d",
        "fold",
        "global_avg_pool",
        "group_norm",
        "inverted_residual",
        "layer_norm",
        "linear",
        "linear_attention",
        "pointwise_conv2d",
        "resize_bilinear",
        "unfold",
    )
    FAST = SimpleNamespace(**{op: globals()[op] for op in OPS})
    REFERENCE = SimpleNamespace(**{op: globals()[op + "_reference"] for op in OPS})

    # launch / output / Recorder / recording: how ops start kernels and how an executor records a run (see _launch.py)
    __all__ = [
        "FAST",
        "REFERENCE",
        "OPS",
        "KernelArgumentError",
        "pack",
        "activation_code",
        "NONE",
        "SILU",
        "RELU",
        "GELU",
        "Recorder",
        "launch",
        "output",
        "recording",
    ]
