"""Policy networks: shapes, clamping, Gaussian sampling, cached windows, re-anchoring, checkpoints."""

import pytest
import torch

from worldmodel.nn.backbone import Backbone, BackboneConfig
from worldmodel.nn.policy import Policy, PolicyConfig, clamp_straight_through

B, TC = 3, 4


def window(seed: int = 0, t: int = TC):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(B, t, 3, 117, 24, generator=g),
        torch.randn(B, t, 4, generator=g),
        torch.rand(B, 117, 24, generator=g),
    )


def make(kind: str = "deterministic", seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    return Policy(PolicyConfig.tiny(kind=kind)).eval()


@pytest.mark.parametrize("kind", ["deterministic", "gaussian"])
def test_action_shapes_and_clamp(kind):
    policy = make(kind)
    images, states, mask = window()
    out = policy(policy.init_cache(images, states, mask), sample=True)
    assert out["action"].shape == (B, 2) and out["action"].abs().max() <= 3.0
    if kind == "gaussian":
        assert out["log_std"].shape == (B, 2)
        lo, hi = policy.config.log_std_bounds
        assert (out["log_std"] >= lo).all() and (out["log_std"] <= hi).all()
        assert not torch.equal(out["action"], out["mean"].clamp(-3, 3))  # a sample, not the mean


def test_kinematic_action_limits_replace_the_sigma_clamp():
    limits = ((-6.2, -0.2), (6.2, 0.2))
    torch.manual_seed(0)
    policy = Policy(PolicyConfig.tiny(action_limits=limits)).eval()
    policy.set_normalisation({"state_mean": torch.zeros(4), "state_std": torch.ones(4),
                              "action_mean": torch.tensor([0.1, 0.0]), "action_std": torch.tensor([0.75, 0.01])})  # fmt: skip
    low, high = policy.action_bounds()
    assert torch.allclose(policy.unnormalise_actions(low), torch.tensor(limits[0]))
    assert torch.allclose(policy.unnormalise_actions(high), torch.tensor(limits[1]))
    raw = torch.tensor([[-20.0, 0.0], [-7.0, 30.0], [2.0, -30.0]])  # normalised; -7 sigma = -5.15 m/s^2
    si = policy.unnormalise_actions(policy.clamp_actions(raw))
    assert torch.allclose(si, torch.tensor([[-6.2, 0.0], [-5.15, 0.2], [1.6, -0.2]]), atol=1e-5)
    sigma = Policy(PolicyConfig.tiny())  # PPUU's clamp would stop braking at -3 sigma
    sigma.load_state_dict({k: v for k, v in policy.state_dict().items()})
    assert sigma.unnormalise_actions(sigma.clamp_actions(raw))[1, 0].item() == pytest.approx(0.1 - 3 * 0.75)
    assert PolicyConfig.from_dict(policy.config.to_dict()) == policy.config
    with pytest.raises(ValueError, match="action_limits"):
        PolicyConfig.tiny(action_limits=((1.0, 0.2), (-1.0, -0.2)))


def test_clamp_has_identity_gradient():
    x = torch.tensor([-5.0, 0.5, 4.0], requires_grad=True)
    y = clamp_straight_through(x, -3.0, 3.0)
    assert y.tolist() == [-3.0, 0.5, 3.0]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_gaussian_sample_is_reparameterised():
    policy = make("gaussian")
    images, states, mask = window()
    out = policy(policy.init_cache(images, states, mask), sample=True, generator=torch.Generator().manual_seed(1))
    out["action"].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.head.parameters())


def test_pushed_cache_equals_a_fresh_window():
    policy = make()
    images, states, mask = window(t=TC + 2)
    cache = policy.init_cache(images[:, :TC], states[:, :TC], mask)
    for t in range(TC, TC + 2):
        cache = policy.push(cache, images[:, t], states[:, t])
    fresh = policy.init_cache(images[:, 2:], states[:, 2:], mask)
    assert torch.allclose(policy(cache)["action"], policy(fresh)["action"], atol=1e-5)


def test_actions_do_not_depend_on_the_position_anchor():
    policy = make()
    policy.set_normalisation({"state_mean": torch.tensor([1.0, 2.0, 3.0, 0.0]), "state_std": torch.tensor([5.0, 0.5, 2.0, 1.0]),
                              "action_mean": torch.zeros(2), "action_std": torch.ones(2)})  # fmt: skip
    images, states, mask = window()
    shifted = states.clone()
    shifted[..., 0] += 7.0 / 5.0  # 7 m further along x, for every frame of the window
    shifted[..., 1] -= 0.3 / 0.5
    a = policy.act(images, states, mask)
    assert torch.allclose(a, policy.act(images, shifted, mask), atol=1e-5)
    moved = states.clone()
    moved[:, -1, 0] += 3.0  # the last frame alone moves: the motion changed, so may the action
    assert not torch.allclose(a, policy.act(images, moved, mask))


def test_checkpoint_round_trip(tmp_path):
    policy = make("gaussian")
    path = tmp_path / "p.pt"
    torch.save(policy.checkpoint_dict(7, note="x"), path)
    again = Policy.from_checkpoint(path).eval()
    images, states, mask = window()
    assert torch.equal(policy.act(images, states, mask), again.act(images, states, mask))
    with pytest.raises(ValueError, match="kind"):
        Policy.from_checkpoint({"format": 1, "kind": "forward_model"})


def test_trunk_from_a_three_channel_backbone_ignores_the_mask_at_first():
    policy = make()
    source = Backbone(BackboneConfig.tiny())
    policy.load_backbone_weights(source.state_dict())
    first = policy.backbone.frame_encoder[0].weight
    assert torch.equal(first[:, :3], source.frame_encoder[0].weight) and (first[:, 3] == 0).all()
    images, states, mask = window()
    assert torch.allclose(policy.act(images, states, mask), policy.act(images, states, torch.zeros_like(mask)))


def test_config_validation_and_round_trip():
    config = PolicyConfig.tiny(kind="gaussian")
    assert PolicyConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="4 input channels"):
        PolicyConfig(backbone=BackboneConfig.tiny())
    with pytest.raises(ValueError, match="kind"):
        PolicyConfig.tiny(kind="stochastic")
