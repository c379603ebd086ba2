"""Backbone: shapes of the presets, exact decoder sizes, the per-frame/fused split, config round trip."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmodel.nn.backbone import Backbone, BackboneConfig, Decoder, MapEmbedding, ResidualBottleneck


def test_ppuu_preset_gives_a_256_x_14_x_3_map():
    c = BackboneConfig.ppuu()
    assert (c.widths, c.context_frames, c.dropout, c.negative_slope) == ((64, 128, 256), 20, 0.1, 0.2)
    assert (c.feature_dim, *c.map_size) == (256, 14, 3)
    assert c.frame_shape == (16, 58, 12)  # 16 spatial kernels x 4 temporal filters = PPUU's 64 channels
    assert c.fused_channels == 64
    backbone = Backbone(c).eval()
    with torch.no_grad():
        h = backbone(torch.rand(1, 20, 3, 117, 24), torch.randn(1, 20, 4))
    assert h.shape == (1, 256, 14, 3)


@pytest.mark.parametrize("frame_layers", [1, 2, 3])
@pytest.mark.parametrize("fusion", ["basis", "concat"])
def test_tiny_shapes(frame_layers, fusion):
    c = BackboneConfig.tiny(frame_layers=frame_layers, fusion=fusion)
    backbone = Backbone(c)
    images, states = torch.rand(2, c.context_frames, 3, 117, 24), torch.randn(2, c.context_frames, 4)
    features = backbone.encode_frames(images)
    assert features.shape == (2, c.context_frames, *c.frame_shape)
    h = backbone.fuse(features, states)
    assert h.shape == (2, c.feature_dim, *c.map_size)
    image, state = Decoder(c)(h)
    assert image.shape == (2, 3, 117, 24) and state.shape == (2, 4)
    assert ResidualBottleneck(c)(h).shape == h.shape


def test_fuse_takes_a_tensor_or_a_sequence_of_frames():
    c = BackboneConfig.tiny()
    backbone = Backbone(c).eval()
    features = torch.randn(2, c.context_frames, *c.frame_shape)
    states = torch.randn(2, c.context_frames, 4)
    with torch.no_grad():
        a = backbone.fuse(features, states)
        b = backbone.fuse(list(features.unbind(1)), states)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="context frames|frames and states"):
        backbone.fuse(features[:, 1:], states[:, 1:])


def test_encode_frames_is_per_frame():
    """A frame's features do not depend on the other frames (what makes the cache valid)."""
    backbone = Backbone(BackboneConfig.tiny()).eval()
    images = torch.rand(2, 3, 3, 117, 24)
    with torch.no_grad():
        all_frames = backbone.encode_frames(images)
        one = backbone.encode_frames(images[:, 1:2])
    torch.testing.assert_close(all_frames[:, 1:2], one)


@settings(max_examples=15, deadline=None)
@given(height=st.integers(8, 130), width=st.integers(8, 40), layers=st.integers(1, 3))
def test_decoder_output_has_the_exact_input_size(height, width, layers):
    widths = (4, 8, 8)[:layers]
    if min(height, width) >> layers < 1:
        return
    c = BackboneConfig.tiny(height=height, width=width, widths=widths, frame_layers=1, hidden=8, embed_channels=2)
    h = torch.randn(1, c.feature_dim, *c.map_size)
    image, _ = Decoder(c)(h)
    assert image.shape == (1, 3, height, width)
    assert ResidualBottleneck(c)(h).shape == h.shape


def test_map_embedding_shape():
    c = BackboneConfig.tiny()
    assert MapEmbedding(5, c)(torch.randn(3, 5)).shape == (3, c.feature_dim, *c.map_size)


def test_config_round_trip_and_validation():
    c = BackboneConfig.tiny(fusion="concat", frame_layers=2)
    assert BackboneConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="fusion"):
        BackboneConfig(fusion="sum")
    with pytest.raises(ValueError, match="frame_layers"):
        BackboneConfig(frame_layers=4)
    with pytest.raises(ValueError, match="too small"):
        BackboneConfig(height=4, width=4)
