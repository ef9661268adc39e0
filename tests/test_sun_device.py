"""install_sun on any device and dtype, and on the exact SD-1.5 UNet layout (built on `meta`)."""

import pytest
import torch
from diffusers import UNet2DConditionModel

from bench.sun_sd15 import SD15_UNET
from core.sun.adapter import SUNAttnProcessor, install_sun, joint_context

# SD-1.5's 16 cross-attention layers by width: down 0/1/2 (2 each), mid (1), up 1/2/3 (3 each)
SD15_CROSS_WIDTHS = sorted([320] * 2 + [640] * 2 + [1280] * 2 + [1280] + [1280] * 3 + [640] * 3
                           + [320] * 3)
SD15_TEXT_DIM = 768
SD15_UNET_PARAMS = 859_520_964  # the released SD-1.5 UNet's count


def tiny_unet(**overrides) -> UNet2DConditionModel:
    torch.manual_seed(0)
    kw = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
              layers_per_block=1, cross_attention_dim=24, attention_head_dim=8, norm_num_groups=8,
              down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return UNet2DConditionModel(**(kw | overrides)).eval()


def sd15_on_meta() -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel(**SD15_UNET)


def _joint(batch, length, dim, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    pos, neg = torch.randn(2, batch, length, dim, generator=g).to(device, dtype)
    return joint_context(pos, neg)


def test_sd15_layout_wraps_all_16_cross_attentions_with_the_hand_counted_parameters():
    unet = sd15_on_meta()
    assert sum(p.numel() for p in unet.parameters()) == SD15_UNET_PARAMS
    adapter = install_sun(unet)
    procs = [p for n, p in unet.attn_processors.items() if n.endswith("attn2.processor")]
    assert len(adapter.names) == len(procs) == 16
    assert all(isinstance(p, SUNAttnProcessor) for p in procs)
    widths = sorted(p.to_k_neg.out_features for p in procs)
    assert widths == SD15_CROSS_WIDTHS and sum(widths) == 12_480
    # per layer of width C: 4 projections 768 x C (no bias) + 4 C-vectors = 3076 C
    count = sum(p.numel() for p in adapter.parameters())
    assert count == 3076 * 12_480 == 38_388_480
    assert count / SD15_UNET_PARAMS == pytest.approx(0.04466, abs=1e-5)
    adapter.remove()
    half = install_sun(unet, add_pos=False)
    assert sum(p.numel() for p in half.parameters()) == 1538 * 12_480 == 19_194_240


def test_install_on_a_meta_unet_keeps_every_adapter_tensor_on_meta_and_runs():
    unet = sd15_on_meta()
    adapter = install_sun(unet)
    assert {p.device.type for p in adapter.parameters()} == {"meta"}
    x = torch.empty(1, 4, 16, 16, device="meta")
    out = unet(x, torch.tensor([500], device="meta"),
               _joint(1, 77, SD15_TEXT_DIM, "meta")).sample
    assert out.shape == x.shape and out.device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_adapter_follows_the_unet_dtype(dtype):
    unet = tiny_unet().to(dtype)
    adapter = install_sun(unet)
    assert {p.dtype for p in adapter.parameters()} == {dtype}
    with torch.no_grad():
        out = unet(torch.randn(2, 4, 8, 8, dtype=dtype), torch.tensor([10, 900]),
                   _joint(2, 5, 24, dtype=dtype)).sample
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_an_installed_adapter_moves_with_its_unet():
    unet = tiny_unet()
    adapter = install_sun(unet)
    names = {n for n, _ in adapter.named_parameters()}
    unet.to(torch.float64)
    assert {p.dtype for p in adapter.parameters()} == {torch.float64}
    unet.to("meta")
    assert {p.device.type for p in adapter.parameters()} == {"meta"}
    assert {n for n, _ in adapter.named_parameters()} == names  # moved, not re-created


def test_attach_after_remove_restores_the_adapted_unet():
    unet = tiny_unet()
    adapter = install_sun(unet)
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([10, 900]), _joint(2, 5, 24)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05)
        adapted = unet(x, t, ctx).sample
        adapter.remove()
        plain = unet(x, t, ctx[:, :5]).sample
        adapter.attach()
        torch.testing.assert_close(unet(x, t, ctx).sample, adapted, atol=0, rtol=0)
        with pytest.raises(ValueError, match="already installed"):
            adapter.attach()
        adapter.remove()
        torch.testing.assert_close(unet(x, t, ctx[:, :5]).sample, plain, atol=0, rtol=0)
