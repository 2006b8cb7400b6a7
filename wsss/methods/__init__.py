"""CAM methods, one module each, registered with :func:`register_method` (see :mod:`wsss.methods.registry`).

Adding a method: a module here with a registered :class:`Method` subclass, its ``cls`` keys in the schema
(``definitions.cls``), its tests and a README line; nothing else reads a method name."""

from wsss.methods.registry import (
    Method,
    TrainingPhase,
    discover,
    get_method,
    method_argument,
    method_names,
    register_method,
)

discover()

__all__ = ["Method", "TrainingPhase", "discover", "get_method", "method_argument", "method_names", "register_method"]
