"""Encoders and random-shift augmentation: shapes, contracts, errors and exact shift semantics."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from encoders import (
    ConvEncoder,
    RandomShift,
    ResNet18Encoder,
    build_encoder,
    count_parameters,
    shift_images,
)

SHAPE = (3, 32, 32)  # small images keep the conv tests fast; 84/64 px are covered below


def random_images(keys, batch=4, shape=SHAPE, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=gen) for k in keys}


# ---------------------------------------------------------------- ConvEncoder / ResNet18Encoder


@pytest.mark.parametrize("keys", [("agentview",), ("agentview", "wrist")])
@pytest.mark.parametrize("proprio_dim", [0, 9])
def test_conv_output_shape(keys, proprio_dim):
    encoder = ConvEncoder(keys, SHAPE, proprio_dim, feature_dim=16)
    proprio = torch.randn(4, proprio_dim)
    out = encoder(random_images(keys), proprio)
    assert out.shape == (4, 16 + proprio_dim) == (4, encoder.output_dim)
    assert out.dtype == torch.float32
    if proprio_dim == 0:  # proprio may also be left out altogether
        assert encoder(random_images(keys)).shape == (4, 16)


def test_proprio_passes_through_unchanged():
    encoder = ConvEncoder(["cam"], SHAPE, proprio_dim=5, feature_dim=16)
    proprio = torch.randn(4, 5) * 100  # outside the tanh range, so it cannot have been squashed
    out = encoder(random_images(["cam"]), proprio)
    assert torch.equal(out[:, 16:], proprio)
    assert out[:, :16].abs().max() <= 1.0  # the projection ends in tanh
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = encoder(random_images(["cam"]), proprio)
    assert out_bf16.dtype == torch.float32
    assert torch.equal(out_bf16[:, 16:], proprio)


def test_gradients_reach_every_conv():
    encoder = ConvEncoder(["a", "b"], SHAPE, proprio_dim=3, feature_dim=16)
    encoder(random_images(["a", "b"]), torch.randn(4, 3)).square().sum().backward()
    convs = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * 4  # one stack of len(strides) convs per camera
    for conv in convs:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_orthogonal_init_and_zero_bias():
    encoder = ConvEncoder(["cam"], SHAPE, proprio_dim=0, feature_dim=16)
    linear = encoder.projection[0]
    w = linear.weight  # (16, in): orthonormal rows
    assert torch.allclose(w @ w.T, torch.eye(16), atol=1e-4)
    for m in encoder.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0


@pytest.mark.parametrize("kind", ["conv", "resnet18"])
def test_every_camera_is_used(kind):
    keys = ("agentview", "wrist")
    encoder = build_encoder(kind, keys, SHAPE, proprio_dim=2, feature_dim=16).eval()
    images, proprio = random_images(keys, batch=2), torch.randn(2, 2)
    with torch.no_grad():
        base = encoder(images, proprio)
        for key in keys:
            changed = dict(images, **{key: 255 - images[key]})
            out = encoder(changed, proprio)
            assert not torch.allclose(out[:, :16], base[:, :16]), key
            assert torch.equal(out[:, 16:], proprio)


@pytest.mark.parametrize("kind", ["conv", "resnet18"])
def test_input_errors_name_the_key(kind):
    keys = ("agentview", "wrist")
    encoder = build_encoder(kind, keys, SHAPE, proprio_dim=2)
    good, proprio = random_images(keys, batch=2), torch.randn(2, 2)

    with pytest.raises(ValueError, match="missing image 'wrist'"):
        encoder({"agentview": good["agentview"]}, proprio)
    with pytest.raises(ValueError, match=r"'wrist' must be uint8 .*float32"):
        encoder(dict(good, wrist=good["wrist"].float()), proprio)
    with pytest.raises(ValueError, match=r"'wrist' must have shape \(B, 3, 32, 32\)"):
        encoder(dict(good, wrist=torch.zeros(2, 3, 40, 32, dtype=torch.uint8)), proprio)
    with pytest.raises(ValueError, match=r"'agentview' must have shape \(B, 3, 32, 32\)"):
        encoder(dict(good, agentview=torch.zeros(2, 1, 32, 32, dtype=torch.uint8)), proprio)
    with pytest.raises(ValueError, match=r"proprio .* shape \(2, 2\)"):
        encoder(good, torch.randn(2, 3))


def test_conv_rejects_too_small_images():
    with pytest.raises(ValueError, match="too small"):
        ConvEncoder(["cam"], (3, 8, 8), proprio_dim=0, strides=(2, 2, 2, 2))


def test_conv_channels_last_and_bf16_match_fp32():
    encoder = ConvEncoder(["cam"], SHAPE, proprio_dim=0, feature_dim=16)
    images = random_images(["cam"])
    with torch.no_grad():
        reference = encoder(images)
        channels_last = {k: v.contiguous(memory_format=torch.channels_last) for k, v in images.items()}
        encoder_cl = encoder.to(memory_format=torch.channels_last)
        assert torch.allclose(encoder_cl(channels_last), reference, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = encoder_cl(channels_last)
    assert torch.allclose(out_bf16, reference, atol=0.1)


@pytest.mark.parametrize("size", [84, 64])
def test_resnet18_group_norm_and_sizes(size):
    encoder = ResNet18Encoder(["cam"], (3, size, size), proprio_dim=4, feature_dim=32)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in encoder.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in encoder.modules())
    proprio = torch.randn(2, 4)
    out = encoder(random_images(["cam"], batch=2, shape=(3, size, size)), proprio)
    assert out.shape == (2, 36)
    assert torch.equal(out[:, 32:], proprio)
    out.sum().backward()
    assert encoder.trunks[0].conv1.weight.grad.abs().sum() > 0


def test_resnet18_other_channel_counts():
    encoder = ResNet18Encoder(["cam"], (6, 32, 32), proprio_dim=0, feature_dim=8)
    assert encoder(random_images(["cam"], batch=2, shape=(6, 32, 32))).shape == (2, 8)


def test_factory():
    assert isinstance(build_encoder("conv", ["cam"], SHAPE, 0, strides=(2, 1)), ConvEncoder)
    with pytest.raises(ValueError, match=r"valid kinds: \['conv', 'resnet18', 'state'\]"):
        build_encoder("vit", ["cam"], SHAPE, 0)
    encoder = ConvEncoder(["cam"], (3, 8, 8), proprio_dim=0, strides=(1,), channels=2, feature_dim=4)
    # conv 3*2*9 + 2, linear 2*6*6*4 + 4, layernorm 2*4
    assert count_parameters(encoder) == 56 + 292 + 8


# ---------------------------------------------------------------- RandomShift


def reference_shift(images: torch.Tensor, dy: int, dx: int, pad: int = 4) -> torch.Tensor:
    """Replicate-pad then crop at (pad + dy, pad + dx): the DrQ definition."""
    _, _, h, w = images.shape
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    return padded[:, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w].to(images.dtype)


SHIFTS = list(itertools.product(range(-4, 5), repeat=2))


def recover_shifts(inputs: torch.Tensor, outputs: torch.Tensor) -> list[list[tuple[int, int]]]:
    """For each sample, every (dy, dx) in [-4, 4]^2 whose reference shift equals the output."""
    matches = torch.stack(
        [(reference_shift(inputs, dy, dx) == outputs).flatten(1).all(1) for dy, dx in SHIFTS], 1
    )
    return [[SHIFTS[j] for j in row.nonzero().flatten().tolist()] for row in matches]


def test_random_shift_is_an_edge_replicated_shift_independent_per_sample():
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 20, 20), dtype=torch.uint8, generator=gen)
    batch = image.expand(32, -1, -1, -1).contiguous()  # 32 identical images
    out = RandomShift(pad=4)(batch, generator=torch.Generator().manual_seed(1))

    assert out.dtype == torch.uint8 and out.shape == batch.shape
    found = recover_shifts(batch, out)
    assert all(len(m) == 1 for m in found), found  # random pixels: exactly one shift fits
    shifts = [m[0] for m in found]
    # Identical inputs, so different outputs can only come from per-sample shifts.
    assert len(set(shifts)) > 10
    assert len({o.numpy().tobytes() for o in out}) == len(set(shifts))


def test_random_shift_is_reproducible_with_a_generator():
    images = random_images(["cam"], batch=8, shape=(3, 16, 16))["cam"]
    shift = RandomShift()
    a = shift(images, generator=torch.Generator().manual_seed(7))
    b = shift(images, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_random_shift_covers_negative_and_positive_shifts():
    images = random_images(["cam"], batch=256, shape=(3, 12, 12), seed=1)["cam"]
    out = RandomShift(pad=4)(images, generator=torch.Generator().manual_seed(2))
    found = recover_shifts(images, out)
    assert all(len(m) == 1 for m in found)
    dys = {m[0][0] for m in found}
    dxs = {m[0][1] for m in found}
    assert dys == dxs == set(range(-4, 5))  # all 9 values per axis in 256 draws


def test_shift_images_matches_reference_on_float_and_channels_last():
    images = torch.rand(len(SHIFTS), 2, 10, 13)
    shifts = torch.tensor(SHIFTS)
    for x in (images, images.contiguous(memory_format=torch.channels_last)):
        out = shift_images(x, shifts)
        assert out.dtype == torch.float32
        for i, (dy, dx) in enumerate(SHIFTS):
            assert torch.equal(out[i : i + 1], reference_shift(x[i : i + 1], dy, dx))


def test_random_shift_pad_zero_is_identity():
    images = random_images(["cam"], batch=4, shape=(3, 16, 16))["cam"]
    assert torch.equal(RandomShift(pad=0)(images), images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_shift_and_encoder_on_cuda():
    images = random_images(["cam"], batch=8, shape=(3, 16, 16))["cam"]
    out = RandomShift()(images.cuda(), generator=torch.Generator().manual_seed(0))
    assert out.is_cuda and out.dtype == torch.uint8
    found = recover_shifts(images, out.cpu())
    assert all(len(m) == 1 for m in found)
    encoder = ConvEncoder(["cam"], SHAPE, proprio_dim=2).cuda()
    proprio = torch.randn(4, 2, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        features = encoder({k: v.cuda() for k, v in random_images(["cam"]).items()}, proprio)
    assert features.shape == (4, 66) and torch.equal(features[:, 64:], proprio)
