"""ForwardModel: shapes per mode, zero-update identity, dropout, KL, learning, checkpoints, cache equivalence."""

import pytest
import torch

from worldmodel.nn.forward_model import MODES, ForwardModel, ForwardModelConfig

TC, TP, B = 4, 3, 2  # the tiny preset's context length; a few predicted frames; batch 2


def make_batch(seed: int = 0, b: int = B, tc: int = TC, tp: int = TP) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "context_images": torch.rand(b, tc, 3, 117, 24, generator=g),
        "context_states": torch.randn(b, tc, 4, generator=g),
        "actions": torch.randn(b, tp, 2, generator=g),
        "future_images": torch.rand(b, tp, 3, 117, 24, generator=g),
        "future_states": torch.randn(b, tp, 4, generator=g),
        "future_costs": torch.rand(b, tp, 3, generator=g),
        "car_size": torch.rand(b, 2, generator=g),
        "ego_mask": torch.rand(b, 117, 24, generator=g),
    }


def make_model(mode: str, seed: int = 0, **overrides) -> ForwardModel:
    torch.manual_seed(seed)
    return ForwardModel(ForwardModelConfig.tiny(mode, **overrides))


def moving_rectangles(n: int, tc: int, tp: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Cars (6 x 3 px rectangles, G channel) moving along the rows between static lane lines (R channel).

    Each car keeps its speed (-3..3 px per frame) over the context; in the future the action (-1, 0, 1) is
    its change of speed. States: (column / 10, row / 50, 0, speed / 2).
    """
    height, width, t_all = 117, 24, tc + tp
    images = torch.zeros(n, t_all, 3, height, width)
    images[:, :, 0, :, 5] = images[:, :, 0, :, 18] = 1.0
    rows = torch.randint(20, 80, (n,), generator=g)
    cols = torch.randint(4, width - 7, (n,), generator=g)
    speeds = torch.randint(-3, 4, (n,), generator=g)
    accels = torch.randint(-1, 2, (n, tp), generator=g)
    states = torch.zeros(n, t_all, 4)
    for i in range(n):
        row, speed, col = int(rows[i]), int(speeds[i]), int(cols[i])
        for t in range(t_all):
            if t > 0:
                if t >= tc:
                    speed += int(accels[i, t - tc])
                row = max(0, min(height - 6, row + speed))
            images[i, t, 1, row : row + 6, col : col + 3] = 1.0
            states[i, t] = torch.tensor([col / 10, row / 50, 0.0, speed / 2])
    return {
        "context_images": images[:, :tc],
        "context_states": states[:, :tc],
        "actions": accels[:, :, None].float().expand(-1, -1, 2).clone(),
        "future_images": images[:, tc:],
        "future_states": states[:, tc:],
    }


@pytest.mark.parametrize("mode", MODES)
def test_shapes_for_every_mode(mode):
    model = make_model(mode)
    batch = make_batch()
    out = model.loss(batch)
    assert set(out) >= {"image_mse", "state_mse", "kl", "active_units", "loss"}
    assert all(v.shape == () for v in out.values())
    assert torch.isfinite(out["loss"])
    z = "sample" if model.config.stochastic else None
    r = model.rollout(batch["context_images"], batch["context_states"], batch["actions"], z=z)
    assert r["images"].shape == (B, TP, 3, 117, 24) and r["states"].shape == (B, TP, 4)
    assert (r["images"] >= 0).all() and (r["images"] <= 1).all()
    k = model.rollout(batch["context_images"], batch["context_states"], batch["actions"], z=z, n_samples=3)
    assert k["images"].shape == (B, 3, TP, 3, 117, 24) and k["states"].shape == (B, 3, TP, 4)
    if model.config.stochastic:
        assert r["z"].shape == (B, TP, 8) and k["z"].shape == (B, 3, TP, 8)
    cache = model.init_cache(batch["context_images"], batch["context_states"])
    image, state, cache = model.step(cache, batch["actions"][:, 0], z=z)
    assert image.shape == (B, 3, 117, 24) and state.shape == (B, 4) and len(cache.features) == TC


@pytest.mark.parametrize("image_update", ["logit", "pixel"])
def test_zero_update_is_the_identity(image_update):
    model = make_model("vae", image_update=image_update, zero_init=False).eval()
    for layer in (model.decoder.image[-1], model.decoder.state[-1][-1]):
        assert layer.weight.abs().sum() > 0  # not zero unless asked
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    batch = make_batch()
    batch["context_images"][:, -1, :, :10] = torch.randint(0, 2, (B, 3, 10, 24)).float()  # saturated pixels
    with torch.no_grad():
        cache = model.init_cache(batch["context_images"], batch["context_states"])
        image, state, _ = model.step(cache, batch["actions"][:, 0], z="sample")
    atol = model.config.logit_eps if image_update == "logit" else 0.0
    torch.testing.assert_close(image, batch["context_images"][:, -1], atol=atol, rtol=0)
    torch.testing.assert_close(state, batch["context_states"][:, -1], atol=0, rtol=0)


def test_zero_init_starts_as_copy_last_frame():
    model = make_model("deterministic").eval()
    batch = make_batch()
    with torch.no_grad():
        r = model.rollout(batch["context_images"], batch["context_states"], batch["actions"])
    last = batch["context_images"][:, -1:].clamp(1e-3, 1 - 1e-3).expand_as(r["images"])
    torch.testing.assert_close(r["images"], last, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["vae", "vae-lp"])
def test_rollout_with_z_given_is_deterministic_without_dropout_and_varies_with_it(mode):
    model = make_model(mode).eval()
    with torch.no_grad():  # a non-zero decoder, so that dropout shows in the images
        for layer in (model.decoder.image[-1], model.decoder.state[-1][-1]):
            layer.weight.normal_(0, 0.1)
    batch = make_batch()
    z = torch.randn(B, TP, model.config.n_z)
    args = (batch["context_images"], batch["context_states"], batch["actions"])
    with torch.no_grad():
        a, b = model.rollout(*args, z=z), model.rollout(*args, z=z)
        torch.testing.assert_close(a["images"], b["images"], atol=0, rtol=0)
        model.set_dropout(True)
        c, d = model.rollout(*args, z=z), model.rollout(*args, z=z)
        k = model.rollout(*args, z=z, n_samples=2)
    assert not torch.equal(c["images"], d["images"]) and not torch.equal(a["states"], c["states"])
    assert not torch.equal(k["images"][:, 0], k["images"][:, 1])  # independent masks per sample
    if mode == "vae":  # the given z is shared by the samples (with a learned prior, mu_p and sigma_p vary)
        torch.testing.assert_close(k["z"][:, 0], k["z"][:, 1])
    model.set_dropout(False)
    with torch.no_grad():
        torch.testing.assert_close(model.rollout(*args, z=z)["images"], a["images"], atol=0, rtol=0)


@pytest.mark.parametrize("mode", ["vae", "vae-lp"])
def test_kl_is_finite_and_gradients_reach_the_latent_networks(mode):
    model = make_model(mode, z_dropout=0.5, free_bits=0.01, zero_init=False)
    out = model.loss(make_batch())
    assert torch.isfinite(out["kl"]) and out["kl"] >= 0
    assert 0 <= out["active_units"] <= model.config.n_z and not out["active_units"].requires_grad
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    grads = [p.grad for p in model.posterior_net.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    if mode == "vae-lp":  # the learned prior trains (through its fit to the posterior)
        grads = [p.grad for p in model.prior_net.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def _grad_norms(model: ForwardModel, term: torch.Tensor) -> dict[str, float]:
    model.zero_grad(set_to_none=True)
    term.backward(retain_graph=True)
    parts = {"prior": model.prior_net, "posterior": model.posterior_net, "backbone": model.backbone}
    return {
        name: sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None)
        for name, part in parts.items()
    }


def test_the_learned_prior_learns_from_its_fit_only():
    """KL(sg(q) || p) trains the prior alone; reconstruction (z-dropped prior samples included) and the
    posterior's KL(q || sg(p)) never reach it, so it cannot shrink to a point estimate."""
    model = make_model("vae-lp", z_dropout=1.0, zero_init=False).train()
    out = model.loss(make_batch(), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["prior_kl"], out["kl"])  # one value, two gradient routes
    fit = _grad_norms(model, out["prior_kl"])
    assert fit["prior"] > 0 and fit["posterior"] == 0 and fit["backbone"] == 0
    posterior_kl = _grad_norms(model, out["kl"])
    assert posterior_kl["prior"] == 0 and posterior_kl["posterior"] > 0
    recon = _grad_norms(model, out["image_mse"] + out["state_mse"])  # z-dropout 1: every z from the prior
    assert recon["prior"] == 0 and recon["backbone"] > 0
    expected = out["image_mse"] + out["state_mse"] + 1e-6 * out["kl"] + model.config.prior_beta * out["prior_kl"]
    torch.testing.assert_close(out["loss"], expected)


def test_kl_of_the_learned_prior_decreases_when_trained_on_it():
    model = make_model("vae-lp")
    opt = torch.optim.Adam(model.prior_net.parameters(), lr=1e-2)
    batch = make_batch()
    kls = []
    for _ in range(15):
        out = model.loss(batch, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        out["prior_kl"].backward()  # (the prior's only gradient: see test_the_learned_prior_learns_from_its_fit_only)
        opt.step()
        kls.append(out["prior_kl"].item())
    assert kls[-1] < 0.5 * kls[0]


def test_kl_annealing_and_deterministic_kl():
    model = make_model("vae", beta=1.0, kl_anneal_steps=10)
    out = model.loss(make_batch(), step=5)
    assert out["beta"].item() == pytest.approx(0.5)
    det = make_model("deterministic").loss(make_batch())
    assert det["kl"].item() == 0 and det["active_units"].item() == 0


def test_a_tiny_model_learns_moving_rectangles_and_beats_copy_last_frame():
    tc, tp = 4, 2
    torch.manual_seed(0)
    model = ForwardModel(ForwardModelConfig.tiny("deterministic"))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        out = model.loss(moving_rectangles(16, tc, tp, g))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-10:]) < 0.25 * sum(losses[:10])
    test = moving_rectangles(64, tc, tp, torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        r = model.rollout(test["context_images"], test["context_states"], test["actions"])
    model_mse = (r["images"][:, 0] - test["future_images"][:, 0]).pow(2).mean()
    copy_mse = (test["context_images"][:, -1] - test["future_images"][:, 0]).pow(2).mean()
    assert model_mse < 0.9 * copy_mse


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_round_trip(mode, tmp_path):
    model = make_model(mode, seed=3)
    model.set_normalisation(
        {"state_mean": [1.0, 2, 3, 4], "state_std": [2.0] * 4, "action_mean": [0.5, 0], "action_std": [3.0, 1]}
    )
    path = tmp_path / "fm.pt"
    torch.save(model.checkpoint_dict(step=7, note="x"), path)
    ckpt = torch.load(path, weights_only=True)
    assert (ckpt["format"], ckpt["kind"], ckpt["step"], ckpt["note"]) == (1, "forward_model", 7, "x")
    loaded = ForwardModel.from_checkpoint(path)
    assert loaded.config == model.config
    batch = make_batch()
    z = torch.randn(B, TP, model.config.n_z) if model.config.stochastic else None
    args = (batch["context_images"], batch["context_states"], batch["actions"])
    with torch.no_grad():
        a, b = model.eval().rollout(*args, z=z), loaded.eval().rollout(*args, z=z)
    torch.testing.assert_close(a["images"], b["images"], atol=0, rtol=0)
    torch.testing.assert_close(a["states"], b["states"], atol=0, rtol=0)
    torch.testing.assert_close(loaded.unnormalise_states(torch.zeros(4)), torch.tensor([1.0, 2, 3, 4]))
    with pytest.raises(ValueError, match="kind"):
        ForwardModel.from_checkpoint({"format": 1, "kind": "policy"})


def test_normalisation_helpers_invert():
    model = make_model("deterministic")
    model.set_normalisation(
        {"state_mean": [1.0, 2, 3, 4], "state_std": [2.0] * 4, "action_mean": [0.5, 0], "action_std": [3.0, 1]}
    )
    s, a = torch.randn(5, 4), torch.randn(5, 2)
    torch.testing.assert_close(model.unnormalise_states(model.normalise_states(s)), s)
    torch.testing.assert_close(model.unnormalise_actions(model.normalise_actions(a)), a)
    assert {"state_mean", "state_std", "action_mean", "action_std"} <= set(model.state_dict())


@pytest.mark.parametrize("mode", ["deterministic", "vae-lp"])
def test_cached_rollout_equals_recomputing_the_window_from_scratch(mode):
    model = make_model(mode).eval()
    with torch.no_grad():
        for layer in (model.decoder.image[-1], model.decoder.state[-1][-1]):
            layer.weight.normal_(0, 0.1)
    batch = make_batch(tp=5)
    z = torch.randn(B, 5, model.config.n_z) if model.config.stochastic else None
    images, states = batch["context_images"], batch["context_states"]
    with torch.no_grad():
        cached = model.rollout(images, states, batch["actions"], z=z)
        for t in range(5):  # re-encode the whole window at every step, as PPUU does
            cache = model.init_cache(images[:, -TC:], states[:, -TC:])
            image, state, _ = model.step(cache, batch["actions"][:, t], z=None if z is None else z[:, t])
            images = torch.cat([images, image[:, None]], 1)
            states = torch.cat([states, state[:, None]], 1)
    torch.testing.assert_close(cached["images"], images[:, TC:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached["states"], states[:, TC:], atol=1e-5, rtol=1e-5)


def test_infer_z_replays_the_posterior_rollout():
    model = make_model("vae-lp").eval()
    batch = make_batch()
    args = (batch["context_images"], batch["context_states"], batch["actions"])
    with torch.no_grad():
        noise = model.infer_z(*args, batch["future_images"])
        r = model.rollout(*args, z=noise)
        # the latents used are the posterior means along that rollout
        cache = model.init_cache(batch["context_images"], batch["context_states"])
        targets = model.encode_targets(batch["future_images"])
        for t in range(TP):
            h = model.backbone.fuse(cache.features, cache.states)
            mu_q, _ = model.posterior(h, targets[:, t])
            torch.testing.assert_close(r["z"][:, t], mu_q, atol=1e-5, rtol=1e-4)
            cache = model.push(cache, r["images"][:, t], r["states"][:, t])


def test_warm_start_from_a_deterministic_model():
    det = make_model("deterministic", seed=1).eval()
    vae = make_model("vae", seed=2)
    report = vae.load_deterministic(det.checkpoint_dict(step=0))
    assert any(k.startswith("backbone.") for k in report["loaded"])
    assert any(k.startswith("posterior_net.") for k in report["kept"])
    batch = make_batch()
    args = (batch["context_images"], batch["context_states"], batch["actions"])
    with torch.no_grad():  # the z expander starts at zero: the stochastic model predicts as the deterministic one
        a = det.rollout(*args)
        b = vae.eval().rollout(*args, z=torch.randn(B, TP, vae.config.n_z))
    torch.testing.assert_close(a["images"], b["images"])


def test_config_round_trip_and_dropout_override():
    c = ForwardModelConfig.tiny("vae-lp", dropout=0.3, free_bits=0.1)
    assert c.backbone.dropout == 0.3
    assert ForwardModelConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="mode"):
        ForwardModelConfig(mode="gan")
    with pytest.raises(ValueError, match="no z"):
        make_model("deterministic").rollout(*list(make_batch().values())[:3], z="sample")


def test_a_backbone_instance_is_shared_not_copied():
    config = ForwardModelConfig.tiny("vae")
    backbone = ForwardModel(config).backbone
    model = ForwardModel(config, backbone=backbone)
    assert model.backbone is backbone
    with pytest.raises(ValueError, match="backbone"):
        ForwardModel(ForwardModelConfig.tiny("vae", dropout=0.2), backbone=backbone)
