"""Views: temporal offsets, translations that respect the channels, erasing; all from the generator."""

from __future__ import annotations

import pytest
import torch

from worldmodel.ssl.views import (
    ROAD_CHANNELS,
    VEHICLES_CHANNEL,
    ViewConfig,
    drop_channel,
    erase,
    make_views,
    random_boxes,
    temporal_pair,
    translate,
)


def test_translate_fills_road_channels_by_repetition_and_vehicles_with_zero():
    images = torch.rand(2, 3, 3, 9, 6)
    out = translate(images, torch.tensor([[2, -1], [0, 0]]))
    assert torch.equal(out[1], images[1])
    # content moved down 2 rows and left 1 column
    assert torch.equal(out[0, :, :, 2:, :-1], images[0, :, :, :-2, 1:])
    # beyond the edge: lanes and off-road repeat the edge pixel, vehicles are empty
    for c in (0, 2):
        assert torch.equal(out[0, :, c, :2, :-1], images[0, :, c, :1, 1:].expand(-1, 2, -1))
        assert torch.equal(out[0, :, c, 2:, -1], images[0, :, c, :-2, -1])
    assert (out[0, :, 1, :2] == 0).all() and (out[0, :, 1, :, -1] == 0).all()


def test_erase_sets_a_rectangle_to_zero_in_every_channel_and_frame():
    images = torch.ones(2, 2, 3, 10, 8)
    out = erase(images, torch.tensor([[1, 2, 3, 4], [0, 0, 0, 5]]))
    assert out[0].sum() == images[0].sum() - 2 * 3 * 3 * 4
    assert (out[0, :, :, 1:4, 2:6] == 0).all() and torch.equal(out[1], images[1])


def test_temporal_pair_offsets_and_relative_positions():
    b, tc, k = 3, 4, 3
    images = torch.arange(b * (tc + k), dtype=torch.float).view(b, tc + k, 1, 1, 1).expand(-1, -1, 3, 2, 2)
    xy = torch.cumsum(torch.ones(b, tc + k, 2), dim=1)
    states = torch.cat([xy, torch.randn(b, tc + k, 2)], dim=-1)
    mean, std = torch.tensor([0.5, -1.0, 0.0, 0.0]), torch.tensor([2.0, 3.0, 1.0, 1.0])
    normed = (states - mean) / std
    (ia, sa), (ib, sb) = temporal_pair(images, normed, torch.tensor([1, 2, 3]), tc, mean, std)
    assert torch.equal(ia, images[:, :tc])
    for i, off in enumerate((1, 2, 3)):
        assert torch.equal(ib[i], images[i, off : off + tc])
        raw = sb[i] * std + mean
        assert torch.allclose(raw[-1, :2], torch.zeros(2), atol=1e-6)
        assert torch.allclose(raw[:, 2:], states[i, off : off + tc, 2:], atol=1e-6)
    assert torch.allclose((sa * std + mean)[:, -1, :2], torch.zeros(b, 2), atol=1e-6)


def test_make_views_is_reproducible_and_keeps_range():
    images, states = torch.rand(5, 7, 3, 117, 24), torch.randn(5, 7, 4)
    config = ViewConfig(max_offset=3, max_shift_rows=2, max_shift_cols=1, erase_prob=1.0)
    args = (images, states, 4, torch.zeros(4), torch.ones(4), config)
    (a1, _), (b1, _) = make_views(*args, torch.Generator().manual_seed(3))
    (a2, _), (b2, _) = make_views(*args, torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert a1.shape == (5, 4, 3, 117, 24) and 0 <= a1.min() and a1.max() <= 1
    with pytest.raises(ValueError, match="max_offset"):
        make_views(images[:, :5], states[:, :5], 4, torch.zeros(4), torch.ones(4), config, torch.Generator())


def test_random_boxes_respect_area_and_bounds():
    config = ViewConfig(erase_prob=1.0, erase_area=(0.05, 0.1))
    boxes = random_boxes(200, 117, 24, config, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 117).all() and (left + w <= 24).all()
    area = (h * w).float() / (117 * 24)
    assert area.min() > 0.02 and area.max() < 0.2


@pytest.mark.parametrize("per", ["view", "pair"])
def test_drop_states_zeroes_whole_views(per):
    images, states = torch.rand(64, 5, 3, 117, 24), torch.randn(64, 5, 4)
    config = ViewConfig(max_offset=1, drop_states=0.5, drop_states_per=per)
    (_, sa), (_, sb) = make_views(images, states, 4, torch.full((4,), 0.5), torch.ones(4), config, torch.Generator())
    dropped_a, dropped_b = ((s == 0).flatten(1).all(1) for s in (sa, sb))
    for s, dropped in ((sa, dropped_a), (sb, dropped_b)):
        assert 10 < int(dropped.sum()) < 54
        assert ((s != 0).flatten(1).all(1) | dropped).all()
    if per == "pair":  # both views of a window together
        assert torch.equal(dropped_a, dropped_b)
    else:  # independently: some pairs have one view with states and one without
        assert (dropped_a != dropped_b).sum() > 5
    with pytest.raises(ValueError, match="drop_states_per"):
        ViewConfig(drop_states_per="batch")


def test_drop_vehicles_blanks_the_vehicles_channel_of_whole_views_and_keeps_the_road():
    images, states = torch.rand(64, 5, 3, 117, 24) + 0.01, torch.randn(64, 5, 4)
    config = ViewConfig(max_offset=1, max_shift_rows=0, erase_prob=0.0, drop_vehicles=0.5)
    (ia, _), (ib, _) = make_views(images, states, 4, torch.zeros(4), torch.ones(4), config, torch.Generator())
    for view in (ia, ib):
        blank = (view[:, :, VEHICLES_CHANNEL] == 0).flatten(1).all(1)
        assert 10 < int(blank.sum()) < 54  # about half of the views, each blanked in every frame
        assert (view[:, :, VEHICLES_CHANNEL].flatten(1) > 0).all(1).eq(~blank).all()
        assert (view[:, :, list(ROAD_CHANNELS)] > 0).all()  # lanes and off-road untouched
    dropped = drop_channel(images, torch.tensor([True] + [False] * 63))
    assert torch.equal(dropped[1:], images[1:]) and dropped[0, :, VEHICLES_CHANNEL].abs().sum() == 0
