"""Joint-embedding self-supervised pretraining of the shared backbone (SPEC.md §7).

Public names: the losses (``nt_xent``, ``barlow_twins``, ``vicreg``, ``byol``, ``simsiam``, from ``losses``);
``gather_with_grad`` (``gather``); ``ViewConfig``, ``make_views`` (``views``); ``Encoder`` (``heads``); the
objectives ``VICReg``, ``BarlowTwins``, ``SimCLR``, ``BYOL``, ``SimSiam``, ``SSLConfig``, ``build_objective``
(``objectives``); ``health_metrics``, ``effective_rank`` (``health``); ``ProbeConfig``, ``evaluate_probes``
(``probes``); ``TrainSSLConfig``, ``train_ssl`` (``train``); ``evaluate_ssl`` (``evaluate``). The backbone's
export and reuse live in ``worldmodel.nn.backbone_export``, the benchmark in ``worldmodel.bench.ssl``.
Importing this package runs nothing and imports no torch (the names resolve on first use, PEP 562), so
that ``worldmodel --help`` stays fast.
"""

from importlib import import_module

_WHERE = {
    "evaluate_ssl": "evaluate",
    "gather_with_grad": "gather",
    "effective_rank": "health",
    "health_metrics": "health",
    "Encoder": "heads",
    "barlow_twins": "losses",
    "byol": "losses",
    "nt_xent": "losses",
    "simsiam": "losses",
    "vicreg": "losses",
    "BYOL": "objectives",
    "BarlowTwins": "objectives",
    "SimCLR": "objectives",
    "SimSiam": "objectives",
    "SSLConfig": "objectives",
    "VICReg": "objectives",
    "build_objective": "objectives",
    "ProbeConfig": "probes",
    "evaluate_probes": "probes",
    "TrainSSLConfig": "train",
    "train_ssl": "train",
    "ViewConfig": "views",
    "make_views": "views",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"worldmodel.ssl.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'worldmodel.ssl' has no attribute {name!r}")
