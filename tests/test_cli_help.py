"""``--help`` of every command, and flags made from the config dataclasses (``worldmodel.cli.config``)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from worldmodel.cli import build_parser, main
from worldmodel.cli.config import ConfigFlags, build, command_list, field_docs
from worldmodel.nn.forward_model import ForwardModelConfig
from worldmodel.training.fm import TrainFMConfig
from worldmodel.training.policy import TrainPolicyConfig

COMMANDS = [path for path, _ in command_list(build_parser())]


def run_help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def squeeze(text: str) -> str:
    """Text without whitespace (argparse wraps help lines, at spaces and hyphens)."""
    return "".join(text.split())


def subparser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def test_top_level_help_lists_every_command_with_its_line(capsys):
    out = run_help([], capsys)
    assert {"sim", "data record", "train fm", "train ssl", "train policy", "eval policy", "render rollout",
            "bench"} <= set(COMMANDS)  # fmt: skip
    for path, text in command_list(build_parser()):
        assert text, f"{path} has no one-line help"
        assert any(line.split() == [*path.split(), *text.split()] for line in out.splitlines()), path


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    out = run_help(command.split(), capsys)
    assert out.startswith(f"usage: worldmodel {command}")


def test_train_fm_help_is_the_field_docstrings_with_the_dataclass_defaults(capsys):
    out = squeeze(run_help(["train", "fm"], capsys))
    actions = {a.dest: a for a in subparser("train", "fm")._actions}
    rename = {"lr_warmup_steps": "lr_warmup"}
    documented = 0
    for f in dataclasses.fields(TrainFMConfig):
        if f.name == "model":  # a nested config: its fields are flags of their own
            continue
        action = actions[rename.get(f.name, f.name)]
        doc = field_docs(TrainFMConfig)[f.name]
        assert action.help.startswith(doc.replace("%", "%%")), f.name
        assert squeeze(doc) in out, f.name
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not action.required:
            assert action.default == default, f.name
        documented += 1
    assert documented == len(dataclasses.fields(TrainFMConfig)) - 1  # every field but the model has its flag
    for name, doc in field_docs(ForwardModelConfig).items():  # the model's, over the preset
        if name not in ("backbone", "view", "costs"):  # nested; the view and costs come from the data
            assert actions[{"kl_anneal_steps": "kl_anneal"}.get(name, name)].help.startswith(doc), name
    # the docstrings are the ones written in the class, under each field
    assert squeeze("Adam learning rate (PPUU: 1e-4). (default: 0.0001)") in out
    assert squeeze("--kl-anneal KL_ANNEAL Linear warm-up of beta from 0 over this many training steps") in out


def test_defaults_of_other_commands_come_from_their_dataclasses():
    from worldmodel.data.record import RecordConfig
    from worldmodel.driving.closed_loop import EvalPolicyConfig
    from worldmodel.viz.sim_run import SimRunConfig

    for path, cls, rename in ((("sim",), SimRunConfig, {"warmup_s": "warmup"}),
                              (("data", "record"), RecordConfig, {"warmup_s": "warmup"}),
                              (("train", "policy"), TrainPolicyConfig, {"policy_kind": "policy"}),
                              (("eval", "policy"), EvalPolicyConfig, {})):  # fmt: skip
        actions = {a.dest: a for a in subparser(*path)._actions}
        checked = 0
        for f in dataclasses.fields(cls):
            action = actions.get(rename.get(f.name, f.name))
            if action is None or action.required or f.default is dataclasses.MISSING:
                continue
            assert action.default == f.default, (path, f.name)
            assert action.help.startswith(field_docs(cls)[f.name].replace("%", "%%")), (path, f.name)
            checked += 1
        assert checked >= 5, path


def test_flags_of_the_scripts_keep_their_meaning():
    parser = build_parser()
    args = parser.parse_args(["train", "fm", "--data", "e.h5", "--preset", "tiny", "--context-frames", "20",
                              "--mode", "vae-lp", "--image-update", "pixel", "--kl-anneal", "7", "--lr-warmup", "3",
                              "--beta", "1e-4", "--freeze-backbone", "--no-resume", "--no-progress"])  # fmt: skip
    from worldmodel.cli.fm import train_config

    c = train_config(args)
    assert (c.model.mode, c.model.image_update, c.model.kl_anneal_steps, c.model.beta) == ("vae-lp", "pixel", 7, 1e-4)
    assert c.model.backbone.context_frames == 20 and c.model.backbone.widths == (16, 32, 64)  # tiny, 20 frames
    assert (c.lr_warmup_steps, c.freeze_backbone, c.resume, c.progress) == (3, True, False, False)
    default = train_config(parser.parse_args(["train", "fm", "--data", "e.h5"]))
    assert default == TrainFMConfig(data="e.h5")  # no flag: the dataclass's run and the ppuu vae model

    from worldmodel.cli.policy import train_config as policy_config

    args = parser.parse_args(["train", "policy", "--fm", "f.pt", "--data", "d", "--policy", "gaussian",
                              "--uncertainty-weight", "0", "--init-backbone", "none"])  # fmt: skip
    c = policy_config(args)
    assert (c.policy_kind, c.costs.uncertainty_weight, c.init_backbone) == ("gaussian", 0.0, None)
    assert policy_config(parser.parse_args(["train", "policy", "--fm", "f.pt", "--data", "d"])) == TrainPolicyConfig(
        data="d", fm="f.pt"
    )


@dataclass(frozen=True)
class Example:
    """A config to test the helper on."""

    count: int = 3
    """How many (a 100 % sure count)."""
    ratio: float | None = None
    """A ratio, or None."""
    sizes: tuple[int, ...] = (1, 2)
    """Widths."""
    pair: tuple[float, float] = (0.5, 1.0)
    """Low and high."""
    name: str = "a"

    flag: bool = False
    """A switch."""
    extra: dict = field(default_factory=dict)
    """No flag: a dict."""


def test_the_helper_types_defaults_renames_and_presets():
    parser = argparse.ArgumentParser()
    flags = ConfigFlags(Example, rename={"count": "n"}, positional=("name",))
    flags.add_to(parser)
    args = parser.parse_args(["b", "--n", "5", "--ratio", "none", "--sizes", "4,5,6", "--pair", "1,2", "--flag"])
    assert flags.config(args) == Example(count=5, ratio=None, sizes=(4, 5, 6), pair=(1.0, 2.0), name="b", flag=True)
    assert flags.config(parser.parse_args(["b"])) == Example(name="b")
    with pytest.raises(SystemExit):
        parser.parse_args(["b", "--pair", "1,2,3"])
    text = parser.format_help()  # "%" is escaped for argparse; an undocumented field has no help but its default
    assert "100 % sure count). (default: 3)" in " ".join(text.split()) and "--no-flag" in text

    presets = {"small": lambda: Example(count=1), "big": lambda: Example(count=9)}
    over = ConfigFlags(Example, include=("count", "ratio"), presets=presets)
    parser = over.add_to(argparse.ArgumentParser())
    assert "(default: the preset's: small 1, big 9)" in " ".join(parser.format_help().split())
    assert build(Example(count=9), parser.parse_args([])) == Example(count=9)
    assert build(Example(count=9), parser.parse_args(["--ratio", "0.5"]), over) == Example(count=9, ratio=0.5)
    with pytest.raises(TypeError, match="no field"):
        ConfigFlags(Example, include=("count", "missing")).fields()
    with pytest.raises(TypeError, match="no flag for a field of type"):
        ConfigFlags(Example, include=("extra",)).fields()
    assert "extra" not in ConfigFlags(Example).fields()  # skipped unless asked for


def test_train_fm_on_a_cpu_says_how_long_before_starting(monkeypatch):
    from worldmodel.cli import fm as fm_cli

    monkeypatch.setattr(fm_cli, "step_seconds", lambda config: 2.0)
    long = dataclasses.replace(fm_cli.preset("ppuu"), data=__file__, device="cpu")  # any existing file
    note = fm_cli.time_note(long, hint="--preset tiny --steps 500")
    assert note.startswith("worldmodel train fm: about 5 days on the CPU for 200000 steps") and "--preset tiny" in note
    assert "\n" not in note
    assert fm_cli.time_note(dataclasses.replace(long, steps=3, batch_size=4)) is None  # a smoke run: no estimate
    assert fm_cli.time_note(dataclasses.replace(long, data="missing.h5")) is None  # train_fm reports the data


def test_step_seconds_measures_a_real_step():
    from worldmodel.cli import fm as fm_cli

    config = dataclasses.replace(fm_cli.preset("tiny"), predict_frames=2, batch_size=8)
    assert 0 < fm_cli.step_seconds(config) < 60
