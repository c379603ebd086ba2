"""The command line, the top of the layout (it may import every other room).

Modules: ``main`` (``worldmodel`` and its sub-commands: ``main``, ``build_parser``), ``config`` (dataclass
configs as flags), ``fm`` (``train fm`` / ``eval fm``), ``policy`` (``train policy``), ``ssl`` (``train ssl``
/ ``eval ssl``), ``evaluation`` (``eval policy``, ``eval worlds``, ``render rollout``). ``python -m
worldmodel.cli`` runs ``main``. Public names: ``main``, ``build_parser`` (from ``main``).
"""

from worldmodel.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
