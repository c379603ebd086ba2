"""``worldmodel train traffic``: the parser and the call (``worldmodel.cli`` wires it under ``train``).

The flags are made from ``TrainTrafficConfig`` and its ``TrafficModelConfig`` (``worldmodel.cli.config``).
"""

from __future__ import annotations

import argparse
import functools
import json

from worldmodel.cli.config import ConfigFlags, build


@functools.cache
def train_flags() -> tuple[ConfigFlags, ConfigFlags]:
    """The flags of the run and of the model."""
    from worldmodel.nn.traffic_model import TrafficModelConfig
    from worldmodel.training.traffic import TrainTrafficConfig

    return ConfigFlags(TrainTrafficConfig, required=("data",)), ConfigFlags(TrafficModelConfig, at="model")


def add_train_parser(tsub) -> argparse.ArgumentParser:
    p = tsub.add_parser("traffic", help="train the traffic model (the other cars' motion, for --world traffic)")
    run, model = train_flags()
    run.add_to(p)
    model.add_to(p, "the model")
    return p


def run_train(args: argparse.Namespace) -> int:
    from worldmodel.training.traffic import TrainTrafficConfig, train_traffic

    print(json.dumps(train_traffic(build(TrainTrafficConfig(), args, *train_flags())), indent=2))
    return 0
