"""Bad arguments raise clear errors at trace time, naming argument, expected and actual."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_gridsample import affine_grid, grid_sample

X4 = jnp.ones((2, 3, 4, 5))
G4 = jnp.zeros((2, 6, 7, 2))
X5 = jnp.ones((2, 3, 4, 5, 6))
G5 = jnp.zeros((2, 1, 2, 3, 3))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(mode="Bilinear"), ValueError, r"mode must be one of 'bilinear', .*got 'Bilinear'"),
        (dict(mode="trilinear"), ValueError, "got 'trilinear'"),
        (dict(mode=None), ValueError, "mode must be one of .* got None"),
        (dict(padding_mode="reflect"), ValueError, "padding_mode must be one of .*'reflect'"),
        (dict(align_corners=1), TypeError, r"align_corners must be a bool or None, got int \(1\)"),
        (dict(align_corners="yes"), TypeError, "align_corners must be a bool"),
    ],
)
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        grid_sample(X4, G4, **kwargs)


@pytest.mark.parametrize(
    "x,g,exc,match",
    [
        (jnp.ones((2, 3, 4)), jnp.zeros((2, 4, 1)), ValueError, r"input must be 4-D .* got 3-D"),
        (jnp.ones((1,) * 6), jnp.zeros((1,) * 6), ValueError, "got 6-D"),
        (
            X4,
            jnp.zeros((2, 6, 7, 3)),
            ValueError,
            r"grid must have shape \(N, H_out, W_out, 2\) for a 4-D input, got \(2, 6, 7, 3\)",
        ),
        (X5, jnp.zeros((2, 6, 7, 3)), ValueError, r"\(N, D_out, H_out, W_out, 3\)"),
        (X4, jnp.zeros((1, 6, 7, 2)), ValueError, r"batch size of input \(2\), got 1"),
        (jnp.ones((2, 3, 0, 5)), G4, ValueError, "non-empty spatial dimensions"),
        (
            jnp.ones((2, 3, 4, 5), jnp.int32),
            jnp.zeros((2, 6, 7, 2), jnp.int32),
            TypeError,
            "input must have a floating dtype .* got int32",
        ),
        (
            X4,
            G4.astype(jnp.float16),
            TypeError,
            r"grid must have the dtype of input \(float32\), got float16",
        ),
        (
            jnp.ones((2, 3, 4, 5), jnp.complex64),
            G4.astype(jnp.complex64),
            TypeError,
            "got complex64",
        ),
        ([[[[1.0]]]], G4, TypeError, "input must be a jax.Array or numpy.ndarray, got list"),
        (X4, None, TypeError, "grid must be a jax.Array .* got NoneType"),
        (X4, 0.5, TypeError, r"got float \(0.5\)"),
    ],
)
def test_bad_arrays(x, g, exc, match):
    with pytest.raises(exc, match=match):
        grid_sample(x, g)


@pytest.mark.parametrize(
    "axis,exc,match",
    [
        (2, ValueError, "channel_axis must be 1 or -1, got 2"),
        (0, ValueError, "got 0"),
        ("last", TypeError, "channel_axis must be an int, got str"),
    ],
)
def test_bad_channel_axis(axis, exc, match):
    with pytest.raises(exc, match=match):
        grid_sample(X4, G4, channel_axis=axis)


def test_channels_last_shape_checks():
    x = jnp.ones((2, 4, 5, 3))  # (N, H, W, C)
    assert grid_sample(x, G4, channel_axis=-1).shape == (2, 6, 7, 3)
    assert grid_sample(x, G4, channel_axis=3).shape == (2, 6, 7, 3)
    with pytest.raises(ValueError, match="non-empty spatial"):
        grid_sample(jnp.ones((2, 0, 5, 3)), G4, channel_axis=-1)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        grid_sample(jnp.ones((2, 4, 3)), G4, channel_axis=-1)


def test_bicubic_5d_not_implemented():
    with pytest.raises(NotImplementedError, match="bicubic.*4-D input only"):
        grid_sample(X5, G5, mode="bicubic")


def test_errors_raised_at_trace_time():
    f = jax.jit(lambda x, g: grid_sample(x, g, mode="bicubic"))
    with pytest.raises(NotImplementedError):
        f.lower(X5, G5)


@pytest.mark.parametrize(
    "theta,size,exc,match",
    [
        (
            jnp.ones((1, 2, 3), jnp.int32),
            (1, 1, 2, 3),
            TypeError,
            "theta must have a floating dtype .* got int32",
        ),
        (
            jnp.ones((1, 3, 4)),
            (1, 1, 2, 3),
            ValueError,
            r"theta must have shape \(N, 2, 3\) = \(1, 2, 3\) .* got \(1, 3, 4\)",
        ),
        (jnp.ones((1, 2, 3)), (1, 1, 2, 3, 4), ValueError, r"\(N, 3, 4\)"),
        (jnp.ones((1, 2, 3)), (2, 1, 2, 3), ValueError, r"= \(2, 2, 3\) .* got \(1, 2, 3\)"),
        (jnp.ones((1, 2, 3)), (1, 2, 3), NotImplementedError, "got size .* of length 3"),
        (jnp.ones((1, 2, 3)), (1, 0, 2, 3), ValueError, r"size must be positive, got \[1, 0"),
        (jnp.ones((1, 2, 3)), (1, 1, -2, 3), ValueError, "size must be positive"),
        (jnp.ones((1, 2, 3)), (1, 1, 2.5, 3), TypeError, r"size\[2\] must be an int, got float"),
        (jnp.ones((1, 2, 3)), (1, 1, True, 3), TypeError, r"size\[2\] must be an int, got bool"),
        (jnp.ones((1, 2, 3)), 5, TypeError, "size must be a sequence of ints, got int"),
        (jnp.ones((1, 2, 3)), "1123", TypeError, "size must be a sequence"),
        ([[[1.0, 0, 0], [0, 1.0, 0]]], (1, 1, 2, 3), TypeError, "theta must be a jax.Array"),
    ],
)
def test_affine_grid_errors(theta, size, exc, match):
    with pytest.raises(exc, match=match):
        affine_grid(theta, size)


def test_affine_grid_accepts_numpy_int_sizes():
    size = tuple(np.array([1, 1, 2, 3]))
    assert affine_grid(jnp.ones((1, 2, 3)), size).shape == (1, 2, 3, 2)


@pytest.mark.parametrize("channel_axis", [1, -1])
def test_spatial_size_limit_is_an_error_not_a_wrong_gather(channel_axis):
    # Abstract shapes: nothing of this size is allocated.
    spatial = (65536, 32768)  # 2**31 elements per channel
    shape = (1, 2) + spatial if channel_axis == 1 else (1,) + spatial + (2,)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    g = jax.ShapeDtypeStruct((1, 4, 4, 2), jnp.float32)
    with pytest.raises(ValueError, match=r"at most 2\*\*31 - 1 elements .* 65536 x 32768"):
        jax.eval_shape(lambda x, g: grid_sample(x, g, channel_axis=channel_axis), x, g)
    # One element fewer is accepted (checked abstractly).
    ok = (1, 2, 65536, 32767) if channel_axis == 1 else (1, 65536, 32767, 2)
    out = jax.eval_shape(
        lambda x, g: grid_sample(x, g, channel_axis=channel_axis),
        jax.ShapeDtypeStruct(ok, jnp.float32),
        g,
    )
    assert out.shape == ((1, 2, 4, 4) if channel_axis == 1 else (1, 4, 4, 2))
