"""The method registry: a CAM method is one module of :mod:`wsss.methods` with a class registered by
:func:`register_method` (as timm's ``@register_model``).

A method owns everything the pipeline does differently per method: the classification network it trains on a
backbone, its training objective (with any state across steps, e.g. VWL-M's memory bank), its CAMs and image-level
scores at inference, its config check and the ``cls`` keys it reads. The config schema's method enum, the stages'
``--method`` choices and the rules all read :func:`method_names`.

This module and the method modules import no torch at import time (the Snakefile and ``wsss.runtime.config`` read the
registry; a method imports its network inside :meth:`Method.build`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from wsss.runtime.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from wsss.engine.train import Objective
    from wsss.models.backbone import ResNetStages
    from wsss.models.vwl import CAMNet

POOL_STRIDE = 16  # the classifier's output stride (an OS16 ResNet)


@dataclass(frozen=True)
class TrainingPhase:
    """One training run of the classifier (``train_cls`` runs a method's phases in order, each from the weights the
    previous one left; a one-phase method is the ordinary classifier training).

    ``epochs`` is a number or ``"auto"`` (held-out early stopping, the ``cls`` section's patience and max_epochs);
    ``lr`` the optimizer's base lr; ``groups(model)`` the optimizer's parameter groups, each with its ``lr_mult``;
    ``objective(device, seed)`` the :class:`wsss.engine.train.Objective` of this phase. Every phase but the last writes
    ``<name>_model.pt`` and ``<name>_train_log.csv`` beside the classifier's ``model.pt`` (the last phase's)."""

    name: str
    epochs: float | str
    lr: float
    groups: Callable[[nn.Module], list[dict[str, Any]]]
    objective: Callable[[torch.device, int], Objective]


class Method:
    """A CAM method. Subclass it, set :attr:`name` and :attr:`cls_keys`, implement :meth:`build`, and override what
    differs from the defaults (which are those of a plain classifier with CAM = ReLU(W·F) and the ``cls`` loss of
    ``model.loss``).

    Extension points for a method whose training adds a loss on CAM-masked features (e.g. ReCAM): :meth:`objective`
    returns any :class:`wsss.engine.train.Objective`, which may run extra forwards on the model's heads; its CAM inference
    may differ through :meth:`cams_and_scores` and :meth:`image_scores`. A method trained in several phases (e.g.
    ReCAM: the plain CAM classifier, then a re-activation phase from its weights with another objective, learning
    rates and parameter groups) returns them from :meth:`training_phases`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    cls_keys: ClassVar[tuple[str, ...]] = ()
    """The method's own keys of the ``cls`` config section (the schema's ``definitions.cls``), read by build."""

    def build(self, backbone: ResNetStages, num_classes: int, cls: Mapping[str, Any]) -> nn.Module:
        """The classification network on ``backbone`` (an OS16 ResNet) for ``num_classes`` foreground classes."""
        raise NotImplementedError

    def check_config(self, cls: Mapping[str, Any]) -> str | None:
        """A problem with a run's effective ``cls`` section for this method, as ``"<key>: <problem>"``, or None."""
        return None

    def objective(self, device: torch.device, seed: int) -> Objective:
        """The training objective of :func:`wsss.engine.train.fit` (one per training run: it may keep state across steps)."""
        from wsss.pipeline.classify import ClassifierObjective

        return ClassifierObjective(device, seed)

    def training_phases(self, cls: Mapping[str, Any]) -> tuple[TrainingPhase, ...]:
        """The classifier's training phases (:class:`TrainingPhase`); by default one: ``cls.epochs`` at ``cls.lr``,
        the backbone at 1× and the new layers at ``cls.lr_mult_new``×, with :meth:`objective`."""
        from wsss.pipeline.classify import optimizer_groups

        mult = cls["lr_mult_new"]

        def groups(model: nn.Module) -> list[dict[str, Any]]:
            return optimizer_groups(cast("CAMNet", model), mult)

        return (TrainingPhase("cls", cls["epochs"], cls["lr"], groups, self.objective),)

    def cams_and_scores(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(CAMs N×C×h×w at the backbone's stride, image-level probabilities N×C) of normalised images N×3×H×W:
        the CAM function of :func:`wsss.ops.cam.multiscale_cams` with ``with_scores=True``."""
        from wsss.pipeline.classify import cam_and_scores

        return cam_and_scores(cast("CAMNet", model), images)

    def image_scores(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Image-level class probabilities N×C of normalised images N×3×H×W."""
        from wsss.pipeline.classify import image_scores

        return image_scores(cast("CAMNet", model), images)


M = TypeVar("M", bound=type[Method])

_REGISTRY: dict[str, Method] = {}


def register_method(cls: M) -> M:
    """Class decorator: register a :class:`Method` subclass under its ``name`` (a second one of that name is an
    error)."""
    name = cls.name
    if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
        raise ValueError(
            f"method {name!r} is registered twice ({type(_REGISTRY[name]).__module__} and {cls.__module__})"
        )
    _REGISTRY[name] = cls()
    return cls


def discover(paths: list[str] | None = None, package: str = "wsss.methods") -> None:
    """Import every module of the ``wsss.methods`` package (each registers its methods), or of ``paths``."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(paths if paths is not None else list(pkg.__path__)):
        if info.name != "registry" and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def method_names() -> tuple[str, ...]:
    """The registered method names, sorted."""
    return tuple(sorted(_REGISTRY))


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name is an InputError naming the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InputError("method", f"{name!r} is not a method (methods: {', '.join(method_names())})") from None


def method_argument(parser: Any) -> None:
    """Add the stages' ``--method`` option (the registry's names) to an argparse parser."""
    parser.add_argument("--method", required=True, choices=method_names(), help="CAM method (wsss.methods)")
