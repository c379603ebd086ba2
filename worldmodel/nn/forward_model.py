"""The forward model: (context frames, states, action, latent z) -> next frame and state, autoregressively.

One step, in the order of PPUU's model (SPEC.md §3), on the fused map ``h = Backbone.fuse(window)``:
``h += z_expander(z)`` (stochastic modes), ``h += action_embedding(a)``, ``h += bottleneck(h)``, then the
decoder gives an image update and a state update. Updates are residual so that a zero update is the identity:
``image = sigmoid(delta + logit(clamp(base, eps, 1 - eps)))`` (``image_update="logit"``) or
``clamp(base + delta, 0, 1)`` with a straight-through gradient (``"pixel"``); ``state = last_state + delta``.
The base is the last frame (``base="last"``, PPUU), or the constant-velocity world's frame of the predicted step
(``base="cv"``: the model predicts the correction to constant velocity; that frame's per-frame features are
added, through a 1x1 conv, to the window's temporally mixed features before the trunk, so the model sees what
it corrects). A ``"cv"`` model takes those frames as ``base_images`` [B, Tp, C, H, W] wherever it rolls out.

Modes: ``"deterministic"`` (no z); ``"vae"`` (posterior q(z | context, target frame), fixed N(0, I) prior,
beta * KL); ``"vae-lp"`` (learned prior p(z | context), SVG-LP style, KL(q || p)). z-dropout replaces the
posterior sample by a prior sample per step and per sample, so the model must listen to the actions.

Latent convention of ``step`` / ``rollout`` / ``infer_z``: a latent argument is the prior's standard-normal
*noise* eps, and the model uses ``z = mu_p + sigma_p * eps`` (in ``"vae"`` mode mu_p = 0, sigma_p = 1, so eps
is z itself). ``None`` means eps = 0 (the prior mean); ``"sample"`` draws eps ~ N(0, I) at every step.

The rollout keeps a ``RolloutCache``: the per-frame features, states and last frame of the current window.
A step encodes only the newly predicted frame; the context is encoded once.

Shapes: B batch, K samples, T time (Tc context, Tp predicted), C, H, W image, S state, A action, Z latent.

The configuration and its presets are in ``forward_model_config``, the latent heads and their KL in
``latent`` (both re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from worldmodel.nn.backbone import Backbone, Decoder, MapEmbedding, ResidualBottleneck
from worldmodel.nn.checkpointing import SelfContainedCheckpoint, load_checkpoint
from worldmodel.nn.forward_model_config import IMAGE_UPDATES, MODES, ForwardModelConfig
from worldmodel.nn.latent import LatentHead, gaussian_kl
from worldmodel.nn.normalisation import NormalisedIO

CHECKPOINT_KIND = "forward_model"


class RolloutCache(NamedTuple):
    """The current window of a rollout."""

    features: tuple[Tensor, ...]
    """Tc tensors [B, F, h1, w1]: the per-frame features of the window's frames, oldest first."""
    states: Tensor
    """[B, Tc, S] normalised states of the window."""
    image: Tensor
    """[B, C, H, W] the window's last frame, in [0, 1]."""


class ForwardModel(SelfContainedCheckpoint, NormalisedIO, nn.Module):
    """Stochastic (or deterministic) autoregressive forward model over ego-view frames and ego states.

    ``backbone``: an existing ``Backbone`` to use (and share, e.g. one pretrained by SSL); its config must
    equal ``config.backbone``. Without it the model builds its own.
    """

    checkpoint_kind = CHECKPOINT_KIND
    config_class = ForwardModelConfig

    def __init__(self, config: ForwardModelConfig, backbone: Backbone | None = None):
        super().__init__()
        self.config = config
        c = config.backbone
        if backbone is not None and backbone.config != c:
            raise ValueError(f"ForwardModel: the backbone's config {backbone.config} differs from {c}")
        self.backbone = Backbone(c) if backbone is None else backbone
        self.decoder = Decoder(c)
        self.action_embedding = MapEmbedding(2, c)
        self.bottleneck = ResidualBottleneck(c)
        if config.stochastic:
            self.z_expander = MapEmbedding(config.n_z, c, layers=1)
            self.posterior_net = LatentHead(c, config.n_z, config.latent_channels, posterior=True)
        if config.mode == "vae-lp":
            self.prior_net = LatentHead(c, config.n_z, config.latent_channels, posterior=False)
        if config.base == "cv":
            self.base_mix = nn.Conv2d(c.frame_channels, c.fused_channels, 1)
        if config.zero_init:
            self.decoder.zero_last()
        self.register_normalisation(c.state_dim)

    # ---------------------------------------------------------------- dropout
    def set_dropout(self, active: bool) -> ForwardModel:
        """Switch every dropout layer on or off, whatever train()/eval() says (``model.train()`` resets it).

        MC dropout for uncertainty: ``model.eval().set_dropout(True)``.
        """
        for m in self.modules():
            if isinstance(m, nn.Dropout | nn.Dropout2d):
                m.train(active)
        return self

    # ---------------------------------------------------------------- one step
    def init_cache(self, context_images: Tensor, context_states: Tensor) -> RolloutCache:
        """Encode a context once. context_images: [B, T, C, H, W] in [0, 1], context_states: [B, T, S]
        normalised, T >= Tc (the last Tc frames are used)."""
        tc = self.config.backbone.context_frames
        if context_images.shape[1] < tc or context_states.shape[1] < tc:
            raise ValueError(f"ForwardModel: needs {tc} context frames, got {context_images.shape[1]}")
        images, states = context_images[:, -tc:], context_states[:, -tc:]
        return RolloutCache(self.backbone.encode_frames(images).unbind(1), states, images[:, -1])

    def push(self, cache: RolloutCache, image: Tensor, state: Tensor, features: Tensor | None = None) -> RolloutCache:
        """Slide the window by one frame: image [B, C, H, W], state [B, S] (features [B, F, h1, w1] if known)."""
        if features is None:
            features = self.backbone.encode_frames(image[:, None])[:, 0]
        states = torch.cat([cache.states[:, 1:], state[:, None]], dim=1)
        return RolloutCache((*cache.features[1:], features), states, image)

    def prior(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """p(z | context): h [B, D, h, w] -> (mu, logvar) [B, Z] (zeros in ``"vae"`` mode)."""
        if self.config.mode == "vae-lp":
            return self.prior_net(h)
        zeros = torch.zeros(h.shape[0], self.config.n_z, device=h.device, dtype=h.dtype)
        return zeros, zeros

    def encode_targets(self, future_images: Tensor) -> Tensor:
        """The posterior's view of the target frames, batched: [B, Tp, C, H, W] -> [B, Tp, latent_channels, h, w]."""
        return self.posterior_net.encode_targets(self.backbone.encode_frames(future_images))

    def posterior(self, h: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | context, target): h [B, D, h, w], target [B, latent_channels, h, w] (from ``encode_targets``)
        -> (mu, logvar) [B, Z]."""
        return self.posterior_net(h, target)

    def base_steps(self, base_images: Tensor | None, steps: int) -> list[tuple[Tensor, Tensor] | None]:
        """Per predicted step, the base frame [B, C, H, W] and its per-frame features [B, F, h1, w1] (``"cv"``
        models: from ``base_images`` [B, >= steps, C, H, W]), or None (``"last"`` models, which take none)."""
        if self.config.base == "last":
            if base_images is not None:
                raise ValueError("ForwardModel: this model updates the last frame and takes no base_images")
            return [None] * steps
        if base_images is None or base_images.dim() != 5 or base_images.shape[1] < steps:
            got = None if base_images is None else tuple(base_images.shape)
            raise ValueError(f"ForwardModel: a base='cv' model needs base_images [B, {steps}, C, H, W], got {got}")
        base_images = base_images[:, :steps]
        return list(zip(base_images.unbind(1), self.backbone.encode_frames(base_images).unbind(1), strict=True))

    def fuse(self, cache: RolloutCache, base: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """The fused map [B, D, h, w] of the cache's window (and of the step's base frame, ``base_steps``)."""
        if base is None:
            return self.backbone.fuse(cache.features, cache.states)
        mixed = self.backbone.mix_window(cache.features) + self.base_mix(base[1])
        return self.backbone.fuse_mixed(mixed, cache.states)

    def _predict(
        self, h: Tensor, cache: RolloutCache, action_embedding: Tensor, z: Tensor | None,
        base: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Decode one step from the fused map h [B, D, h, w]: (image [B, C, H, W], state [B, S])."""
        if z is not None:
            h = h + self.z_expander(z)
        h = h + action_embedding
        h = h + self.bottleneck(h)
        d_image, d_state = self.decoder(h)
        last = cache.image if base is None else base[0]
        if self.config.image_update == "logit":
            eps = self.config.logit_eps
            image = torch.sigmoid(d_image + torch.logit(last.clamp(eps, 1.0 - eps)))
        else:
            raw = last + d_image
            image = raw + (raw.clamp(0.0, 1.0) - raw).detach()  # clamped values, identity gradient
        return image, cache.states[:, -1] + d_state

    def _latent(self, h: Tensor, noise: Tensor | str | None, generator: torch.Generator | None) -> Tensor | None:
        """z = mu_p + sigma_p * noise, in the prior-noise convention (see the module docstring)."""
        if not self.config.stochastic:
            if noise is not None:
                raise ValueError("ForwardModel: a deterministic model takes no z")
            return None
        mu, logvar = self.prior(h)
        if noise is None:
            return mu
        if isinstance(noise, str):
            if noise != "sample":
                raise ValueError(f"ForwardModel: z must be a tensor, None or 'sample', got {noise!r}")
            noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * noise

    def step(
        self,
        cache: RolloutCache,
        action: Tensor,
        z: Tensor | str | None = None,
        generator: torch.Generator | None = None,
        base_image: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, RolloutCache]:
        """One autoregressive step. action: [B, 2] normalised; z: prior noise [B, Z], None or "sample";
        base_image: [B, C, H, W] (``"cv"`` models only).

        Returns (image [B, C, H, W] in [0, 1], state [B, S] normalised, the cache slid by the new frame).
        """
        base = self.base_steps(None if base_image is None else base_image[:, None], 1)[0]
        h = self.fuse(cache, base)
        image, state = self._predict(h, cache, self.action_embedding(action), self._latent(h, z, generator), base)
        return image, state, self.push(cache, image, state)

    # ---------------------------------------------------------------- rollouts
    def rollout(
        self,
        context_images: Tensor,
        context_states: Tensor,
        actions: Tensor,
        z: Tensor | str | None = None,
        n_samples: int | None = None,
        generator: torch.Generator | None = None,
        base_images: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Predict Tp steps from a context, feeding back the predictions.

        context_images: [B, Tc, C, H, W] in [0, 1]; context_states: [B, Tc, S] and actions: [B, Tp, 2]
        normalised; z: prior noise [B, Tp, Z] (shared by the K samples) or [B, K, Tp, Z], None (the prior
        mean) or "sample"; base_images: [B, Tp, C, H, W] (``"cv"`` models only). With ``n_samples=K`` the
        inputs are repeated K times (independent dropout masks and z draws) and the outputs gain a K axis. Returns ``images`` [B(, K), Tp, C, H, W] in [0, 1],
        ``states`` [B(, K), Tp, S] normalised and, in stochastic modes, ``z`` [B(, K), Tp, Z] (latents used).
        """
        b = actions.shape[0]
        if n_samples is not None:
            context_images, context_states, actions = (
                repeat(x, "b ... -> (b k) ...", k=n_samples) for x in (context_images, context_states, actions)
            )
            if base_images is not None:
                base_images = repeat(base_images, "b ... -> (b k) ...", k=n_samples)
            if isinstance(z, Tensor):
                z = repeat(z, "b t z -> (b k) t z", k=n_samples) if z.dim() == 3 else z.flatten(0, 1)
        out = self.rollout_from(self.init_cache(context_images, context_states), actions, z, generator, base_images)
        if n_samples is not None:
            out = {name: rearrange(x, "(b k) t ... -> b k t ...", b=b) for name, x in out.items()}
        return out

    def rollout_from(
        self,
        cache: RolloutCache,
        actions: Tensor,
        z: Tensor | str | None = None,
        generator: torch.Generator | None = None,
        base_images: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``rollout`` from an encoded context (``init_cache``, possibly ``repeat_cache``): actions [B, Tp, 2]
        normalised, z prior noise [B, Tp, Z], None or "sample", base_images [B, Tp, C, H, W] (``"cv"`` models)
        -> ``images`` [B, Tp, C, H, W], ``states`` [B, Tp, S] (and ``z`` [B, Tp, Z] in stochastic modes)."""
        tp = actions.shape[1]
        action_embeddings = self.action_embedding(actions.flatten(0, 1)).unflatten(0, (-1, tp)).unbind(1)
        bases = self.base_steps(base_images, tp)
        images, states, latents = [], [], []
        for t in range(tp):
            h = self.fuse(cache, bases[t])
            z_t = self._latent(h, z[:, t] if isinstance(z, Tensor) else z, generator)
            image, state = self._predict(h, cache, action_embeddings[t], z_t, bases[t])
            images.append(image)
            states.append(state)
            latents.append(z_t)
            if t < tp - 1:
                cache = self.push(cache, image, state)
        out = {"images": torch.stack(images, 1), "states": torch.stack(states, 1)}
        if self.config.stochastic:
            out["z"] = torch.stack(latents, 1)
        return out

    @staticmethod
    def repeat_cache(cache: RolloutCache, k: int) -> RolloutCache:
        """Each of the B windows repeated k times, sample-major: [B, ...] -> [(B k), ...] (as ``rollout``'s
        ``n_samples``). The per-frame encoder has no dropout, so K dropout replicas can share one encoding."""
        features = tuple(repeat(f, "b ... -> (b k) ...", k=k) for f in cache.features)
        states, image = (repeat(x, "b ... -> (b k) ...", k=k) for x in (cache.states, cache.image))
        return RolloutCache(features, states, image)

    def infer_z(
        self,
        context_images: Tensor,
        context_states: Tensor,
        actions: Tensor,
        future_images: Tensor,
        generator: torch.Generator | None = None,
        sample: bool = False,
        base_images: Tensor | None = None,
    ) -> Tensor:
        """Posterior latents along a rollout with ``actions``, as prior noise for ``rollout(z=...)``.

        future_images: [B, Tp, C, H, W], the true frames -> [B, Tp, Z] (posterior means, or samples).
        Feeding the result to ``rollout`` with the same inputs replays the posterior rollout (MPER).
        """
        if not self.config.stochastic:
            raise ValueError("ForwardModel.infer_z: a deterministic model has no latent")
        cache = self.init_cache(context_images, context_states)
        targets = self.encode_targets(future_images).unbind(1)
        bases = self.base_steps(base_images, actions.shape[1])
        noises = []
        for t in range(actions.shape[1]):
            h = self.fuse(cache, bases[t])
            mu_q, logvar_q = self.posterior(h, targets[t])
            z_t = mu_q
            if sample:
                noise = torch.randn(mu_q.shape, generator=generator, device=mu_q.device, dtype=mu_q.dtype)
                z_t = mu_q + (0.5 * logvar_q).exp() * noise
            mu_p, logvar_p = self.prior(h)
            noises.append((z_t - mu_p) * (-0.5 * logvar_p).exp())
            image, state = self._predict(h, cache, self.action_embedding(actions[:, t]), z_t, bases[t])
            cache = self.push(cache, image, state)
        return torch.stack(noises, 1)

    # ---------------------------------------------------------------- training
    def loss(
        self, batch: Mapping[str, Tensor], step: int | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Autoregressive loss over the Tp predicted steps (PPUU): the model feeds back its own predictions.

        batch: ``context_images`` [B, Tc, C, H, W], ``context_states`` [B, Tc, S], ``actions`` [B, Tp, 2],
        ``future_images`` [B, Tp, C, H, W], ``future_states`` [B, Tp, S] (and ``base_images`` [B, Tp, C, H, W]
        for ``"cv"`` models); ``step`` drives the KL annealing.
        Returns ``image_mse``, ``state_mse``, ``kl`` (nats per step, summed over units), ``active_units``
        (no grad), ``beta`` (after annealing) and ``loss = image_mse + state_mse + beta * KL`` (free bits);
        ``"vae-lp"`` adds ``prior_kl`` and ``prior_beta * prior_kl`` to the loss (see ``prior_beta``).
        """
        cfg = self.config
        tc = cfg.backbone.context_frames
        ctx_images, ctx_states = batch["context_images"][:, -tc:], batch["context_states"][:, -tc:]
        actions, fut_images, fut_states = batch["actions"], batch["future_images"], batch["future_states"]
        b, tp = actions.shape[:2]
        # 1. encode every real frame once, batched (the targets too: the posterior reads them)
        frames = torch.cat([ctx_images, fut_images], 1) if cfg.stochastic else ctx_images
        features = self.backbone.encode_frames(frames)  # B (Tc [+ Tp]) F h1 w1
        targets: tuple[Tensor, ...] = ()
        if cfg.stochastic:
            features, target_features = features.split([tc, tp], dim=1)  # (not slices: cheap backward)
            targets = self.posterior_net.encode_targets(target_features).unbind(1)
        cache = RolloutCache(features.unbind(1), ctx_states, ctx_images[:, -1])
        action_embeddings = self.action_embedding(actions.flatten(0, 1)).unflatten(0, (b, tp)).unbind(1)
        bases = self.base_steps(batch.get("base_images"), tp)
        images, states, kls, prior_kls = [], [], [], []
        for t in range(tp):
            # 2. fuse the window (and the base frame), 3. infer z (z-dropout: a prior sample instead), 4. predict,
            # 5. feed back
            h = self.fuse(cache, bases[t])
            z = None
            if cfg.stochastic:
                mu_q, logvar_q = self.posterior(h, targets[t])
                # the learned prior reads the features detached: it is fit to the posterior (``prior_beta``),
                # and neither shapes the features nor learns from reconstruction
                mu_p, logvar_p = self.prior(h.detach())
                if cfg.mode == "vae-lp":
                    prior_kls.append(gaussian_kl(mu_q.detach(), logvar_q.detach(), mu_p, logvar_p))
                    mu_p, logvar_p = mu_p.detach(), logvar_p.detach()
                kls.append(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p))
                noise = torch.randn(mu_q.shape, generator=generator, device=h.device, dtype=h.dtype)
                z = mu_q + (0.5 * logvar_q).exp() * noise
                if self.training and cfg.z_dropout > 0:
                    noise_p = torch.randn(mu_p.shape, generator=generator, device=h.device, dtype=h.dtype)
                    z_prior = mu_p + (0.5 * logvar_p).exp() * noise_p
                    use_prior = torch.rand(b, 1, generator=generator, device=h.device) < cfg.z_dropout
                    z = torch.where(use_prior, z_prior, z)
            image, state = self._predict(h, cache, action_embeddings[t], z, bases[t])
            images.append(image)
            states.append(state)
            if t < tp - 1:
                cache = self.push(cache, image, state)
        # 6. named terms
        image_mse = (torch.stack(images, 1) - fut_images).pow(2).mean()
        state_mse = (torch.stack(states, 1) - fut_states).pow(2).mean()
        beta = cfg.beta
        if cfg.kl_anneal_steps > 0 and step is not None:
            beta *= min(1.0, step / cfg.kl_anneal_steps)
        if kls:
            kl_units = torch.stack(kls, 1).mean((0, 1))  # Z: mean over batch and steps
            kl = kl_units.sum()
            kl_loss = kl_units.clamp(min=cfg.free_bits).sum() if cfg.free_bits > 0 else kl
            active = (kl_units.detach() > cfg.active_unit_threshold).sum().to(image_mse.dtype)
        else:
            kl = kl_loss = active = torch.zeros((), device=image_mse.device, dtype=image_mse.dtype)
        terms = {
            "image_mse": image_mse,
            "state_mse": state_mse,
            "kl": kl,
            "active_units": active,
            "beta": torch.tensor(beta, device=image_mse.device),
            "loss": image_mse + state_mse + beta * kl_loss,
        }
        if prior_kls:  # nats per step, summed over units; its value equals ``kl`` (the gradients differ)
            terms["prior_kl"] = torch.stack(prior_kls, 1).mean((0, 1)).sum()
            terms["loss"] = terms["loss"] + cfg.prior_beta * terms["prior_kl"]
        return terms

    # ---------------------------------------------------------------- checkpoints
    def load_deterministic(self, state_dict: Mapping | str | Path) -> dict[str, list[str]]:
        """Warm start from a (deterministic) model's state dict, checkpoint dict or checkpoint file: copy every
        weight whose name and shape match, and zero the z expander so the model starts as that model.

        Returns ``{"loaded": [...], "kept": [...]}`` (names of this model's weights copied / left as they were).
        """
        if not isinstance(state_dict, Mapping):
            state_dict = load_checkpoint(state_dict, CHECKPOINT_KIND)
        if "state_dict" in state_dict:
            state_dict = state_dict["state_dict"]
        own = self.state_dict()
        matched = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(matched, strict=False)
        if self.config.stochastic:
            nn.init.zeros_(self.z_expander.expand.weight)
            nn.init.zeros_(self.z_expander.expand.bias)
        return {"loaded": sorted(matched), "kept": sorted(set(own) - set(matched))}

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"mode={self.config.mode!r}, parameters={n / 1e6:.2f}M"


__all__ = [
    "CHECKPOINT_KIND",
    "IMAGE_UPDATES",
    "MODES",
    "ForwardModel",
    "ForwardModelConfig",
    "LatentHead",
    "RolloutCache",
    "gaussian_kl",
]
