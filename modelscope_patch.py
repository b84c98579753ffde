"""Guard for the modelscope AST-indexer crash ``'ClassDef' object has no attribute 'type_params'``.

Finding (verified, see below)
-----------------------------
No supported combination needs a patch any more (supported here: Python >= 3.10,
modelscope >= 1.20), so :func:`apply` is a no-op for them.  The crash only happens when
*all three* of these hold:

* modelscope < 1.16.0.  Up to 1.15.x ``modelscope/utils/ast_utils.py`` parsed files with
  ``gast.parse`` and then walked every node generically
  (``for field in node._fields: getattr(node, field)``).  modelscope never reads
  ``type_params`` by name -- ``git log -S type_params`` over the whole modelscope history
  finds nothing.  Commit ff778457 (#888, 2024-06-30, first released in v1.16.0) replaced
  ``gast.parse`` with ``ast.parse`` and dropped the ``gast>=0.2.2`` requirement.  With
  ``ast.parse``, ``_fields`` always matches what the running interpreter sets, so 1.16+
  cannot hit this.
* gast 0.5.5 or 0.6.0 (released June 2024, when the reports began).  These versions add
  ``type_params`` to ``gast.ClassDef._fields`` on every Python, but before Python 3.12 their
  ast->gast converter never sets it on ``ClassDef`` (it does set it on ``FunctionDef`` and
  ``AsyncFunctionDef``).  gast 0.7.0 fixed this (commit b4d2df6, #89).  gast <= 0.5.4 did
  not declare the field.
* Python < 3.12.  From 3.12 on (3.13 included) ``ast.parse`` always sets ``type_params``,
  and gast copies it across.

The nodes that fail are ``gast.ClassDef`` instances, not ``ast.ClassDef``.  The earlier
version of this module patched ``ast.ClassDef``/``FunctionDef``/``AsyncFunctionDef``, which
never fixed the crash (shown by the run described below).  This version patches the gast
classes instead.

How it was verified: modelscope 1.10.0, 1.15.0, 1.16.0, 1.16.1, 1.20.0, 1.30.0 (PyPI
wheels) and the installed 1.40.2 were grepped, and ``ast_utils.py`` was read across every
git tag of modelscope/modelscope.  gast 0.5.4, 0.5.5, 0.6.0 and 0.7.0 (PyPI wheels) and
their git history were read.  On CPython 3.11, ``AstScanning().generate_ast()`` was run for
modelscope {1.10.0, 1.15.0, 1.16.0, 1.20.0} x gast {0.5.4, 0.5.5, 0.6.0, 0.7.0}.  It raised
the AttributeError exactly for modelscope 1.10.0/1.15.0 with gast 0.5.5/0.6.0.  A class
default on ``gast.ClassDef`` fixed all of them; the old ``ast.*`` patch fixed none.  Python
3.10 and 3.12+ were judged from the gast source (its version checks are
``sys.version_info.minor < 12``), not run.

Use: ``import modelscope_patch; modelscope_patch.apply()`` before importing modelscope.
Decisions use package metadata only; modelscope is never imported here, and gast only
when a patch is applied.  Nothing is printed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import sys
from collections.abc import Sequence

__all__ = [
    "AFFECTED_GAST",
    "FIXED_MODELSCOPE",
    "FIXED_PYTHON",
    "MARKER",
    "apply",
    "is_applied",
    "needs_patch",
]

logger = logging.getLogger(__name__)

#: First modelscope release whose AST indexer uses ``ast.parse`` instead of ``gast.parse``.
FIXED_MODELSCOPE: tuple[int, int, int] = (1, 16, 0)
#: Half-open gast range ``[low, high)`` whose ``ClassDef`` declares but does not set ``type_params``.
AFFECTED_GAST: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 5, 5), (0, 7, 0))
#: First Python whose ``ast.parse`` sets ``type_params`` itself (PEP 695).
FIXED_PYTHON: tuple[int, int] = (3, 12)

_NODE_NAMES = ("ClassDef", "FunctionDef", "AsyncFunctionDef")
#: Set to True on every class this module patched.
MARKER = "_modelscope_patch_type_params"

_UNSET: object = object()
_VERSION_RE = re.compile(r"\s*v?(\d+(?:\.\d+)*)")


def _parse_version(value: str | Sequence[int]) -> tuple[int, ...] | None:
    """Turn ``"1.15.0"`` / ``(3, 11, 4, "final", 0)`` into ``(1, 15, 0)`` / ``(3, 11, 4)``."""
    if isinstance(value, str):
        match = _VERSION_RE.match(value)
        if not match:
            return None
        parts = tuple(int(p) for p in match.group(1).split("."))
    else:
        parts = tuple(int(p) for p in value[:3] if isinstance(p, int))
        if not parts:
            return None
    return (parts + (0, 0, 0))[:3]


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def needs_patch(
    python_version: str | Sequence[int] | None = None,
    modelscope_version: str | None | object = _UNSET,
    gast_version: str | None | object = _UNSET,
) -> bool:
    """Return True if this combination hits the ``type_params`` crash.

    ``python_version`` defaults to the running interpreter.  ``modelscope_version`` and
    ``gast_version`` default to the installed distributions, read from package metadata.
    ``None`` means "not installed", which never needs the patch.  Unparsable versions
    return False.
    """
    py = _parse_version(sys.version_info if python_version is None else python_version)
    ms = _installed("modelscope") if modelscope_version is _UNSET else modelscope_version
    ga = _installed("gast") if gast_version is _UNSET else gast_version

    if py is None or py[:2] >= FIXED_PYTHON:
        return False
    if ms is None or ga is None:
        return False
    ms_v = _parse_version(str(ms))
    ga_v = _parse_version(str(ga))
    if ms_v is None or ga_v is None:
        logger.debug("unparsable version (modelscope=%r, gast=%r); not patching", ms, ga)
        return False
    low, high = AFFECTED_GAST
    return ms_v < FIXED_MODELSCOPE and low <= ga_v < high


class _EmptyListDefault:
    """Non-data descriptor: a missing ``type_params`` reads as a fresh ``[]``.

    The list is stored on the instance the first time it is read, so nodes never share a
    mutable default.  An instance that already has ``type_params`` in its ``__dict__``
    keeps that value, because instance attributes win over a non-data descriptor.
    """

    def __get__(self, obj: object, owner: type | None = None) -> object:
        if obj is None:
            return self
        value: list = []
        obj.__dict__["type_params"] = value
        return value


def _target_classes(module: object) -> list[type]:
    classes = []
    for name in _NODE_NAMES:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and "type_params" in getattr(cls, "_fields", ()):
            classes.append(cls)
    return classes


def _patch_classes(classes: Sequence[type]) -> list[type]:
    """Give each class a ``type_params`` default unless it already has one.

    Returns the classes changed by this call.
    """
    changed = []
    for cls in classes:
        if cls.__dict__.get(MARKER) or "type_params" in cls.__dict__:
            continue
        cls.type_params = _EmptyListDefault()
        setattr(cls, MARKER, True)
        changed.append(cls)
    return changed


def is_applied() -> bool:
    """True if the gast node classes already carry this module's patch."""
    gast = sys.modules.get("gast")
    return gast is not None and any(c.__dict__.get(MARKER) for c in _target_classes(gast))


def apply(force: bool = False) -> bool:
    """Patch gast's node classes if :func:`needs_patch` says so (or if ``force``).

    Safe to call more than once: a second call changes nothing.  Call it before importing
    modelscope.  If modelscope is already imported it is still safe, and scans that
    start afterwards are covered.  Returns True if the patch is in effect after this call
    (applied now or by an earlier call), False if it was not needed or gast is missing.
    """
    if not force and not needs_patch():
        logger.debug("modelscope type_params patch not needed for this Python/modelscope/gast")
        return False
    try:
        import gast
    except ImportError:
        logger.debug("gast is not importable; nothing to patch")
        return False
    if "modelscope" in sys.modules:
        logger.debug("modelscope already imported; patch covers AST scans started from now on")
    classes = _target_classes(gast)
    changed = _patch_classes(classes)
    if changed:
        logger.debug("patched type_params default on %s", ", ".join(c.__name__ for c in changed))
    return any(c.__dict__.get(MARKER) for c in classes)
