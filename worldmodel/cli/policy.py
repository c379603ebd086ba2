"""``worldmodel train policy``: the parser and the call (``worldmodel.cli`` wires it under ``train``).

The flags are made from ``TrainPolicyConfig`` and the policy-training weights of its ``CostConfig``
(``worldmodel.cli.config``): their defaults and help are the fields'.
"""

from __future__ import annotations

import argparse
import functools
import json

from worldmodel.cli.config import ConfigFlags

#: The fields of ``CostConfig`` that ``train policy`` sets (its geometry is the dataset's; the weights are those of
#: ``mpur-ppuu`` and of the predicted costs; ``mpur`` and ``distill`` use the ``--objective`` preset's).
COST_FIELDS = ("uncertainty_weight", "uncertainty_hinge", "discount", "proximity_weight", "lane_weight",
               "offroad_weight")  # fmt: skip


@functools.cache
def train_flags() -> tuple[ConfigFlags, ConfigFlags]:
    """The flags of the run (``TrainPolicyConfig``) and of its costs (``CostConfig``, ``COST_FIELDS``)."""
    from worldmodel.costs import CostConfig
    from worldmodel.driving.imagined_worlds import TRAIN_WORLDS
    from worldmodel.driving.objective import PRESETS
    from worldmodel.nn.policy import POLICY_KINDS
    from worldmodel.training.policy import METHODS, TrainPolicyConfig
    from worldmodel.training.policy_config import OBSERVATIONS

    run = ConfigFlags(TrainPolicyConfig, required=("data",), rename={"policy_kind": "policy"},
                      choices={"method": METHODS, "policy_kind": POLICY_KINDS, "world": TRAIN_WORLDS,
                               "objective": PRESETS, "observation": OBSERVATIONS})  # fmt: skip
    return run, ConfigFlags(CostConfig, at="costs", include=COST_FIELDS)


def add_train_parser(tsub) -> argparse.ArgumentParser:
    p = tsub.add_parser(
        "policy",
        help="train a driving policy in imagination through a forward model "
        "(MPUR/distill over decoupled worlds, MPUR-PPUU/MPER/IL)",
    )
    run, costs = train_flags()
    run.add_to(p)
    costs.add_to(p, "costs (the objective's weights)")
    return p


def train_config(args: argparse.Namespace):
    """The ``TrainPolicyConfig`` of parsed arguments."""
    from worldmodel.costs import CostConfig

    run, costs = train_flags()
    return run.config(args, costs=CostConfig(**costs.values(args)))


def run_train(args: argparse.Namespace) -> int:
    from worldmodel.training.policy import train_policy

    print(json.dumps(train_policy(train_config(args)), indent=2))
    return 0
