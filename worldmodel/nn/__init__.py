"""Neural networks: the shared backbone, the forward model (and, from others, the policies).

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
