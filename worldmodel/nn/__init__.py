"""Neural networks: the shared backbone, the forward model (and, from others, the policies).

Also below every trainer: ``checkpointing`` (load_checkpoint), ``saving`` (save_checkpoint, RNG states),
``distributed`` (device and DDP helpers), ``backbone_export`` (export_backbone, load_backbone),
``model_windows`` (a forward model fed from window datasets: load_model, to_model_units, predict).

Public names: ``Backbone``, ``BackboneConfig``, ``Decoder``, ``ResidualBottleneck``, ``MapEmbedding`` (from
``backbone``); ``ForwardModel``, ``ForwardModelConfig``, ``RolloutCache`` (from ``forward_model``).
Importing this package runs nothing.
"""

from worldmodel.nn.backbone import Backbone, BackboneConfig, Decoder, MapEmbedding, ResidualBottleneck
from worldmodel.nn.forward_model import ForwardModel, ForwardModelConfig, RolloutCache

__all__ = [
    "Backbone",
    "BackboneConfig",
    "Decoder",
    "ForwardModel",
    "ForwardModelConfig",
    "MapEmbedding",
    "ResidualBottleneck",
    "RolloutCache",
]
