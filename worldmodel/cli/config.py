"""Command-line flags made from config dataclasses: a flag's type, default and help are its field's.

``ConfigFlags(TrainFMConfig, rename={"lr_warmup_steps": "lr-warmup"}).add_to(parser)`` adds one flag per
field, ``--field-name``: the type from the annotation (int, float, str; ``bool`` as ``--x/--no-x``; ``X | None``,
where ``none`` on the command line is None; tuples as ``1,2,3``), the default from the dataclass, and as
help the string literal written under the field (``field_docs``), followed by the default. Fields of other
types (nested configs, dicts) get no flag unless named in ``include``, which is then an error.

Back from the parsed arguments: ``flags.config(args)`` makes the config; ``build(config, args, *flags)``
puts the flags' values into an existing config, nested ones included (``at="model.backbone"``).

With ``presets`` ({name: a function returning the top-level config}) the flags override a preset: a flag not
given leaves the preset's value (``argparse.SUPPRESS``), and the help shows each preset's value when they
differ. The cost of a parser: one ``inspect.getsource`` and ``ast.parse`` per class, cached.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NONE = "none"
"""What a flag of an ``X | None`` field reads as None."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` of a dataclass (base classes included): the string literal right after each
    field, on one line, without the ``code`` marks."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (a built or generated class)
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, after in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):  # fmt: skip
                docs[node.target.id] = " ".join(after.value.value.replace("``", "").split())
    return docs


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def show(value: Any) -> str:
    """A value as written on the command line (tuples comma-separated, None as ``none``)."""
    if value is None:
        return NONE
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


class _Toggle(argparse.BooleanOptionalAction):
    """``--x/--no-x`` whose help is left as written (some Pythons append the default to it)."""

    def __init__(self, *args, help: str | None = None, **kwargs) -> None:
        super().__init__(*args, help=help, **kwargs)
        self.help = help


def _named(function: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    function.__name__ = name  # argparse names the type in its "invalid <name> value" message
    return function


def _parser_of(annotation: Any) -> tuple[Callable[[str], Any] | None, str | None]:
    """(str -> value, metavar) for a field's annotation; (bool, None) for a toggle; (None, None) if unsupported."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        inner, metavar = _parser_of(next(a for a in args if a is not type(None)))
        if inner is None or inner is bool:
            return None, None
        return _named(lambda s: None if s.lower() == NONE else inner(s), inner.__name__), metavar
    if annotation in (int, float, str, bool):
        return annotation, None
    if origin is tuple and args:
        each = list(args[:1] if args[-1] is Ellipsis else args)
        if not all(t in (int, float, str) for t in each):
            return None, None
        metavar = ",".join(t.__name__.upper() for t in each) + (",..." if args[-1] is Ellipsis else "")
        if args[-1] is Ellipsis:
            return _named(lambda s: tuple(args[0](x) for x in s.split(",")), f"{args[0].__name__} list"), metavar

        def fixed(s: str) -> tuple:
            parts = s.split(",")
            if len(parts) != len(each):
                raise argparse.ArgumentTypeError(f"expected {len(each)} comma-separated values, got {s!r}")
            return tuple(t(x) for t, x in zip(each, parts, strict=True))

        return fixed, metavar
    return None, None


def _get(config: Any, at: str) -> Any:
    return functools.reduce(getattr, at.split("."), config) if at else config


def replace_at(config: Any, at: str, changes: Mapping[str, Any]) -> Any:
    """``config`` with ``changes`` made to its (nested) config at the dotted path ``at`` ("" = itself)."""
    if not changes:
        return config
    if not at:
        return dataclasses.replace(config, **changes)
    head, _, rest = at.partition(".")
    return dataclasses.replace(config, **{head: replace_at(getattr(config, head), rest, changes)})


@dataclass(frozen=True)
class ConfigFlags:
    """The flags of some fields of the config dataclass ``cls`` (see the module docstring)."""

    cls: type
    """The config dataclass."""
    at: str = ""
    """Where a ``cls`` sits in the config that ``build`` fills ("" itself, ``"model.backbone"``)."""
    include: tuple[str, ...] | None = None
    """The fields that get a flag, in this order (None: every field of a supported type)."""
    exclude: tuple[str, ...] = ()
    """Fields that get no flag."""
    rename: Mapping[str, str] = field(default_factory=dict)
    """Flag names (without ``--``) of fields whose flag is not ``--field-name``."""
    positional: tuple[str, ...] = ()
    """Fields read as positional arguments."""
    required: tuple[str, ...] = ()
    """Fields whose flag must be given although the field has a default (fields without one always)."""
    choices: Mapping[str, Sequence] = field(default_factory=dict)
    """The allowed values of some fields."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Command-line defaults that differ from the dataclass's."""
    notes: Mapping[str, str] = field(default_factory=dict)
    """Text added to a field's help (what the command line does beyond the field)."""
    presets: Mapping[str, Callable[[], Any]] | None = None
    """Override a preset (``{name: () -> top-level config}``): flags not given leave the preset's value."""

    def fields(self) -> list[str]:
        """The fields that get a flag."""
        hints = _hints(self.cls)
        known = {f.name: f for f in dataclasses.fields(self.cls) if f.init}
        names = list(known) if self.include is None else list(self.include)
        chosen = []
        for name in names:
            if name not in known:
                raise TypeError(f"{self.cls.__name__} has no field {name!r}")
            supported = _parser_of(hints[name])[0] is not None
            if self.include is not None and not supported:
                raise TypeError(f"{self.cls.__name__}.{name}: no flag for a field of type {hints[name]}")
            if supported and name not in self.exclude:
                chosen.append(name)
        return chosen

    def dest(self, name: str) -> str:
        """The attribute of the parsed arguments that holds field ``name``."""
        return name if name in self.positional else self.rename.get(name, name).replace("-", "_")

    def flag(self, name: str) -> str:
        """The command-line name of field ``name`` (``--field-name``, or the positional's name)."""
        return name if name in self.positional else "--" + self.rename.get(name, name.replace("_", "-"))

    def default(self, name: str) -> Any:
        """The command-line default of field ``name`` (``dataclasses.MISSING`` when it has none)."""
        if name in self.defaults:
            return self.defaults[name]
        f = next(f for f in dataclasses.fields(self.cls) if f.name == name)
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    def help(self, name: str, preset_configs: Mapping[str, Any] | None = None) -> str:
        """The help of field ``name``: its docstring, the notes, and the default."""
        text = " ".join(t for t in (field_docs(self.cls).get(name, ""), self.notes.get(name, "")) if t)
        if name in (*self.positional, *self.required):
            pass  # no default
        elif preset_configs:
            values = {preset: show(getattr(_get(c, self.at), name)) for preset, c in preset_configs.items()}
            if len(set(values.values())) == 1:
                text += f" (default: {next(iter(values.values()))})"
            else:
                text += " (default: the preset's: " + ", ".join(f"{p} {v}" for p, v in values.items()) + ")"
        elif self.default(name) is not dataclasses.MISSING:
            default = self.default(name)
            optional = type(None) in typing.get_args(_hints(self.cls)[name])
            text += f" (default: {show(default)}{f'; {NONE}: None' if optional and default is not None else ''})"
        return text.replace("%", "%%")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup, title: str | None = None):
        """Add the flags to ``parser`` (in a group of their own if ``title``); returns ``parser``."""
        target = parser.add_argument_group(title) if title else parser
        hints = _hints(self.cls)
        preset_configs = {name: make() for name, make in self.presets.items()} if self.presets else None
        for name in self.fields():
            parse, metavar = _parser_of(hints[name])
            kwargs: dict[str, Any] = {"help": self.help(name, preset_configs)}
            if name in self.choices:
                kwargs["choices"] = list(self.choices[name])
            if parse is bool:
                kwargs["action"] = _Toggle
            else:
                kwargs |= {"type": parse, "metavar": metavar}
            if name in self.positional:
                target.add_argument(name, **kwargs)
                continue
            default = self.default(name)
            if name in self.required or (default is dataclasses.MISSING and not preset_configs):
                kwargs["required"] = True
            else:
                kwargs["default"] = argparse.SUPPRESS if preset_configs else default
            target.add_argument(self.flag(name), dest=self.dest(name), **kwargs)
        return parser

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """``{field: value}`` of the parsed arguments (with ``presets``, only the flags given)."""
        given = vars(args)
        return {name: given[self.dest(name)] for name in self.fields() if self.dest(name) in given}

    def config(self, args: argparse.Namespace, **extra: Any) -> Any:
        """``cls(**values, **extra)``: the config of the parsed arguments (``extra``: the fields without a flag)."""
        return self.cls(**(self.values(args) | extra))


def build(config: Any, args: argparse.Namespace, *flags: ConfigFlags) -> Any:
    """``config`` with the values of each of ``flags`` put at its place (``ConfigFlags.at``)."""
    for group in flags:
        config = replace_at(config, group.at, group.values(args))
    return config


def differences(a: Any, b: Any, at: str = "") -> dict[str, Any]:
    """``{dotted field: value in b}`` of the fields where two configs of one class differ, nested ones included."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(a):
        x, y, path = getattr(a, f.name), getattr(b, f.name), f"{at}{f.name}"
        if dataclasses.is_dataclass(x) and type(x) is type(y):
            found |= differences(x, y, path + ".")
        elif x != y:
            found[path] = y
    return found


def command_list(parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """``[(command path, one-line help)]`` of every leaf command of ``parser``, in the order they were added."""
    found: list[tuple[str, str]] = []
    for action in parser._actions:  # argparse keeps its sub-parsers there and nowhere public
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                below = command_list(sub)
                found += [(f"{name} {path}", text) for path, text in below] if below else [(name, helps.get(name, ""))]
    return found


__all__ = ["NONE", "ConfigFlags", "build", "command_list", "differences", "field_docs", "replace_at", "show"]
