"""Ego views resampled at a pose: the view itself at zero offset, a one-pixel move is a one-pixel shift, and
the resampling is differentiable in the pose."""

import torch

from worldmodel.driving.pose_views import view_at_pose
from worldmodel.traffic.view import ViewSpec

SPEC = ViewSpec()


def sparse_frames(b=2, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, t, 3, SPEC.height_px, SPEC.width_px, generator=g, dtype=torch.float64) ** 4
    images[images < 0.3] = 0
    return images


def test_zero_offset_returns_the_view():
    images = sparse_frames()
    out = view_at_pose(images, torch.zeros(2, 3, 3, dtype=torch.float64), SPEC)
    torch.testing.assert_close(out, images, atol=1e-12, rtol=0)


def test_one_pixel_forward_and_sideways_equal_shifted_images():
    images = sparse_frames(1, 1, seed=1)
    pixel = 1 / SPEC.px_per_m
    forward = view_at_pose(images, torch.tensor([[[pixel, 0.0, 0.0]]], dtype=torch.float64), SPEC)
    expected = torch.roll(images, shifts=1, dims=-2)  # one pixel ahead: the world moves one row down the view
    expected[..., 0, :] = 0  # what enters at the top was outside the frame: empty
    torch.testing.assert_close(forward, expected, atol=1e-12, rtol=0)
    right = view_at_pose(images, torch.tensor([[[0.0, pixel, 0.0]]], dtype=torch.float64), SPEC)
    expected = torch.roll(images, shifts=-1, dims=-1)  # one pixel to the right: the world moves one column left
    expected[..., -1] = 0
    torch.testing.assert_close(right, expected, atol=1e-12, rtol=0)


def test_a_half_turn_mirrors_the_view_and_the_pose_gets_a_gradient():
    images = sparse_frames(1, 1, seed=2)
    turned = view_at_pose(images, torch.tensor([[[0.0, 0.0, torch.pi]]], dtype=torch.float64), SPEC)
    torch.testing.assert_close(turned, images.flip(-1, -2), atol=1e-9, rtol=0)  # odd H, W: the centre is a pixel
    pose = torch.tensor([[[0.37, -0.21, 0.05]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: view_at_pose(images, p, SPEC).sum(), (pose,))
