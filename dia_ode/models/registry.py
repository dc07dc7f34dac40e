"""Model registry with metadata: base names plus an attention, `{attention}_{base}` as short names.

A backbone file registers each of its base names once (timm's `@register_model`, with the metadata
that code here needs instead of scanning modules):

    @register_model(family="resnet", kind="discrete", tasks=("classification",))
    def resnet56(attention="none", num_classes=10, in_channels=3, **attention_options): ...

Every registered base name is buildable with each attention it lists, as `create_model("resnet56",
attention="dia", sam="eca")` or by the short name `create_model("dia_resnet56", sam="eca")` (the
plain model has no prefix). Options are checked against the constructor's signature and the
attention's own options before anything is built, so a typo is a ValueError listing the valid keys.
"""

from __future__ import annotations

import fnmatch
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from dia_ode.attention.registry import ATTENTIONS, get_attention
from dia_ode.solvers import stages_of
from dia_ode.util import did_you_mean, unknown_name

KINDS = ("discrete", "continuous")
# backbones with multi-scale maps (forward_stages): the detector (models/detector.py) sits on them
DETECTION_READY = ("classification", "detection")
HEADS = ("classifier", "detection")


@dataclass(frozen=True)
class ModelEntry:
    """A registered base model.

    Attributes:
        name: the base name ("resnet56", "vit_tiny", "odenet").
        constructor: builds the model; takes `attention` plus its own keyword options.
        family: backbone family ("resnet", "preresnet", "vit", "odenet", ...).
        kind: "discrete" (residual stages) or "continuous" (an ODE solve inside).
        tasks: the tasks the model serves ("classification", ...).
        attentions: the attention names it can be built with.
        recipe: training defaults the model is known to want (e.g. {"optimizer": "adamw", "lr": 1e-3,
            "schedule": "warmup_cosine", "warmup_epochs": 2}); engine.recipe_config applies them
            wherever the user gave no value.
    """

    name: str
    constructor: Callable[..., nn.Module]
    family: str
    kind: str
    tasks: tuple[str, ...]
    attentions: tuple[str, ...]
    recipe: tuple[tuple[str, object], ...] = ()

    def full_name(self, attention: str) -> str:
        return self.name if attention == "none" else f"{attention}_{self.name}"

    def options(self, attention: str = "none", sam: str | None = None) -> list[str]:
        """Every keyword option create_model accepts for this model and attention."""
        params = inspect.signature(self.constructor).parameters
        named = [p for p, v in params.items() if p != "attention"
                 and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
        forwards = any(v.kind == v.VAR_KEYWORD for v in params.values())  # **attention_options
        attention_options = get_attention(attention).options(sam, continuous=self.kind == "continuous")
        return named + ([o for o in attention_options if o not in named] if forwards else [])

    def describe_options(self, attention: str = "none", sam: str | None = None) -> list[tuple[str, str, object]]:
        """(name, type, default) of every option create_model accepts for this model and attention."""
        hints = self._option_types(attention, sam)
        defaults = {**get_attention(attention).option_defaults(sam),
                    **{name: p.default for name, p in inspect.signature(self.constructor).parameters.items()}}
        rows = []
        for name in self.options(attention, sam):
            default = defaults.get(name, inspect.Parameter.empty)
            rows.append((name, _type_name(hints[name]) if name in hints else "any",
                         "required" if default is inspect.Parameter.empty else default))
        return rows

    def _option_types(self, attention: str, sam: str | None) -> dict[str, object]:
        """Annotations of the constructor's options and of the attention's (the constructor's win)."""
        return {**get_attention(attention).option_types(sam), **typing.get_type_hints(self.constructor)}

    def check(self, attention: str, options: dict) -> None:
        if attention not in self.attentions:
            raise ValueError(f"model '{self.name}' has no attention '{attention}'"
                             f"{did_you_mean(attention, self.attentions)}; valid: {', '.join(self.attentions)}")
        if "sam" in options:  # the attention's own message says which attentions take it
            get_attention(attention).check({"sam": options["sam"]})
        accepted = self.options(attention, options.get("sam"))
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"model '{self.full_name(attention)}' takes no option {', '.join(map(repr, unknown))}"
                             f"{did_you_mean(unknown, accepted)}; valid: {', '.join(accepted)}")
        hints = self._option_types(attention, options.get("sam"))
        for key, value in options.items():
            if key in hints and not _fits(hints[key], value):
                raise ValueError(f"model '{self.full_name(attention)}': option '{key}' takes "
                                 f"{_type_name(hints[key])}, got {value!r}")


_SIMPLE = (bool, int, float, str, type(None))


def _union_members(hint: object) -> tuple[object, ...]:
    """The members of a union annotation (`float | None`, or typing.Union where a Literal takes part), else (hint,)."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    return typing.get_args(hint) if union else (hint,)


def _is_literal(kind: object) -> bool:
    return typing.get_origin(kind) is typing.Literal


def _fits(hint: object, value: object) -> bool:
    """Whether value fits a simple annotation (int, float, bool, str, None, Literal and their unions); other
    annotations are not judged here. An int fits float; a bool fits neither int nor float."""
    kinds = _union_members(hint)
    if any(kind not in _SIMPLE and not _is_literal(kind) for kind in kinds):
        return True
    for kind in kinds:
        if kind is type(None) and value is None:
            return True
        if _is_literal(kind):
            if isinstance(value, str) and value in typing.get_args(kind):
                return True
            continue
        if kind in (int, float) and isinstance(value, bool):
            continue
        if isinstance(value, kind) or (kind is float and isinstance(value, int)):
            return True
    return False


def _type_name(hint: object) -> str:
    """"float or None", "float or 'learned'": the annotation as `dia-ode ls --options` prints it."""
    names = []
    for kind in _union_members(hint):
        if _is_literal(kind):
            names += [repr(value) for value in typing.get_args(kind)]
        else:
            names.append("None" if kind is type(None) else getattr(kind, "__name__", str(kind)))
    return " or ".join(names)


_ENTRIES: dict[str, ModelEntry] = {}


def register_model(name: str | None = None, *, family: str, kind: str = "discrete",
                   tasks: tuple[str, ...] = ("classification",),
                   attentions: tuple[str, ...] = tuple(ATTENTIONS), recipe: dict | None = None):
    """Decorator registering a constructor under `name` (default: the function's name).

    Usable on a function (`@register_model(family=...)`) or called on one built in a loop
    (`register_model(f"resnet{depth}", family="resnet")(build)`); the constructor's named parameters are
    the model's options, and a **kwargs parameter forwards the attention's.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got '{kind}'")

    def add(constructor: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        base = name or constructor.__name__
        if base in _ENTRIES:
            raise ValueError(f"model '{base}' is already registered")
        _ENTRIES[base] = ModelEntry(base, constructor, family, kind, tuple(tasks), tuple(attentions),
                                    tuple(sorted((recipe or {}).items())))
        return constructor

    return add


def resolve(name: str) -> tuple[ModelEntry, str]:
    """(entry, attention) of a base or short name ("dia_resnet56" -> resnet56, "dia").

    Raises:
        ValueError: unknown name; the message offers the close matches.
    """
    if name in _ENTRIES:
        return _ENTRIES[name], "none"
    prefix, _, base = name.partition("_")
    if base in _ENTRIES and prefix in _ENTRIES[base].attentions and prefix != "none":
        return _ENTRIES[base], prefix
    raise ValueError(unknown_name("model", name, list_models(), see="`dia-ode ls models`"))


def model_entry(name: str) -> ModelEntry:
    """The registry entry (metadata) behind a base or short name."""
    return resolve(name)[0]


def list_models(pattern: str = "*", **metadata) -> list[str]:
    """Sorted short names matching an fnmatch pattern and metadata filters.

    Args:
        pattern: e.g. "dia_*", "*resnet56".
        **metadata: equality filters on family, kind, attention, or membership of task
            (e.g. `list_models(kind="continuous")`, `list_models("*vit*", attention="dia")`).
    """
    unknown = sorted(set(metadata) - {"family", "kind", "task", "attention"})
    if unknown:
        raise ValueError(f"list_models filters on family, kind, task, attention; not {', '.join(unknown)}")
    for key, value in metadata.items():
        valid = sorted({v for e in _ENTRIES.values()
                        for v in ((getattr(e, key),) if key in ("family", "kind") else
                                  e.tasks if key == "task" else e.attentions)})
        if value not in valid:
            raise ValueError(f"no model has {key} '{value}'{did_you_mean(str(value), valid)}; "
                             f"valid: {', '.join(valid)}")
    names = []
    for entry in _ENTRIES.values():
        if any(metadata.get(k, getattr(entry, k)) != getattr(entry, k) for k in ("family", "kind")):
            continue
        if "task" in metadata and metadata["task"] not in entry.tasks:
            continue
        for attention in entry.attentions:
            if metadata.get("attention", attention) == attention:
                names.append(entry.full_name(attention))
    return sorted(fnmatch.filter(names, pattern))


def stage_blocks(name: str) -> list[int]:
    """The number of blocks in each residual stage of a model built with its default options; [] for a
    model without residual stages (a continuous-depth one). Built on the meta device: no memory, no weights.

    Raises:
        ValueError: unknown name (see resolve).
    """
    resolve(name)
    with torch.device("meta"):
        return [len(stage.blocks) for stage in stages_of(create_model(name))]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a base name ("resnet56") or short name ("dia_resnet56") from list_models().
        **kwargs: attention (with a base name), num_classes, in_channels, the backbone's options
            and the attention's options (reduction, sam, ...); head="detection" (with neck_channels, out_stride)
            builds the CenterNet detector of models/detector.py on the backbone instead of a classifier.

    Raises:
        ValueError: unknown name, attention or option (the message offers the close matches).
    """
    entry, attention = resolve(name)
    head = kwargs.pop("head", "classifier")
    if head not in HEADS:
        raise ValueError(unknown_name("head", head, HEADS))
    if head == "detection":
        return _detector(name, entry, kwargs)
    if "attention" in kwargs:
        asked = kwargs.pop("attention")
        if attention != "none" and asked != attention:
            raise ValueError(f"model '{name}' already has attention '{attention}'; got attention='{asked}'")
        attention = asked
    get_attention(attention)
    entry.check(attention, kwargs)  # the keys, against the signature, before anything is built
    try:
        return entry.constructor(attention=attention, **kwargs)
    except TypeError as err:  # a value of the wrong type (heads="abc"): the keys were checked above
        raise ValueError(f"model '{name}': an option has a value of the wrong type ({err})") from None


def _detector(name: str, entry: ModelEntry, kwargs: dict) -> nn.Module:
    """The CenterNet detector on the backbone `name` (its classifier head stays unused)."""
    from dia_ode.models.detector import CenterNetDetector  # the detector imports backbones: after them

    if "detection" not in entry.tasks:
        raise ValueError(f"model '{name}' has no multi-scale maps for a detector (detection serves: "
                         f"{', '.join(n for n, e in sorted(_ENTRIES.items()) if 'detection' in e.tasks)[:200]}...)")
    neck_channels, out_stride = kwargs.pop("neck_channels", 32), kwargs.pop("out_stride", 4)
    backbone = create_model(name, **kwargs)
    return CenterNetDetector(backbone, kwargs.get("num_classes", 10), neck_channels=neck_channels,
                             out_stride=out_stride)
