"""``worldmodel bench <what>``: throughput figures, each against a baseline measured in the same run.

Modules: ``pipeline`` (simulator, rasteriser, recording, extraction, windows; ``machine``), ``fm`` (forward
model training steps), ``ssl`` (SSL steps), ``policy`` (MPUR updates and closed-loop episodes). Import what
you need from the module; nothing runs here.
"""

__all__ = ["fm", "pipeline", "policy", "ssl"]
