"""Refuse a ``torch.export`` archive (``.pt2``) that would run code from the file when loaded.

``torch.export.load`` (PyTorch 2.13) runs code from the archive in several
places: weights and constants saved with ``use_pickle`` are read with
``torch.load(weights_only=False)``, "opaque" constants with ``pickle.loads``,
the sample inputs fall back to ``weights_only=False`` when the safe load fails,
``guards_code`` is Python source passed to ``exec``, symbolic shapes are parsed
by ``sympy.sympify`` (an ``eval``), a node's target ``torch.<anything>`` is
looked up by attribute (``torch.os.system`` resolves), and AOTInductor members
are shared libraries. A plain program exported from an ``nn.Module`` needs none
of that: raw tensor bytes described by JSON, a JSON graph of operator calls.

:func:`check_program_archive` reads the archive as a zip of JSON and bytes,
without PyTorch's loader, and accepts only that: the known members, raw
(unpickled) weights and tensor constants, sample inputs that load with
``weights_only=True``, no guard code, symbolic expressions made of symbols,
numbers and SymPy's capitalised functions, and node targets that are
registered operators (``torch.ops.*``), arithmetic (``_operator``, ``math``)
or PyTorch's symbolic-int helpers.
"""

from __future__ import annotations

import io
import json
import re
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

# Members of a plain archive, relative to its top folder.
_FIXED_MEMBERS = {
    "archive_format", "archive_version", "byteorder", "version", ".data/version", ".data/serialization_id",
}  # fmt: skip
_MEMBER_PATTERNS = (
    re.compile(r"models/[\w.-]+\.json"),
    re.compile(r"data/weights/[\w.-]+_weights_config\.json"),
    re.compile(r"data/weights/weight_\d+"),
    re.compile(r"data/constants/[\w.-]+_constants_config\.json"),
    re.compile(r"data/constants/tensor_\d+"),
    re.compile(r"data/sample_inputs/[\w.-]+\.pt"),
    re.compile(r"extra/[^/]+"),
)
_OPERATOR_FUNCTIONS = {
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
    "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift", "matmul", "truth",
}  # fmt: skip
_TARGET_PATTERNS = (
    re.compile(r"torch\.ops\.[a-z][a-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*){1,2}"),
    re.compile(r"torch\.(sym_[a-z_]+|_sym_[a-z_]+)"),
    re.compile(r"math\.[a-z][a-z0-9_]*"),
)
# Lower-case names a symbolic expression may use: keyword arguments of Symbol() and SymPy constants.
_EXPRESSION_WORDS = {"positive", "integer", "nonnegative", "real", "finite", "oo", "zoo", "nan", "sqrt", "floor",
                     "ceiling", "exp", "log"}  # fmt: skip
_EXPRESSION_OPERATORS = {"(", ")", ",", "+", "-", "*", "/", "%", "**", "//", "=", "==", "!=", "<", "<=", ">", ">=",
                         "&", "|", "~", "^"}  # fmt: skip
_SYMBOL_NAME = re.compile(r"'[A-Za-z][A-Za-z0-9_]*'")


def _refuse(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"model.backbone=export:{path}: {why}; refusing it (loading it could run code from the file). "
        "Re-export a plain nn.Module with torch.export.export and torch.export.save"
    )


def _members(path: Path, archive: zipfile.ZipFile) -> dict[str, str]:
    """Relative member name -> full name; every member must sit in one top folder and be a known kind."""
    members = {}
    for name in archive.namelist():
        top, _, relative = name.partition("/")
        if not relative or name.endswith("/"):
            continue  # the top folder itself
        if not (relative in _FIXED_MEMBERS or any(p.fullmatch(relative) for p in _MEMBER_PATTERNS)):
            raise _refuse(path, f"member {name!r} is not part of a plain torch.export program")
        members[relative] = name
    return members


def _json(path: Path, archive: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(archive.read(name))
    except (ValueError, UnicodeDecodeError):
        raise _refuse(path, f"{name} is not JSON") from None


def _check_payloads(path: Path, archive: zipfile.ZipFile, name: str, prefix: str) -> None:
    """Every entry of a weights / constants config is raw tensor bytes, never a pickle."""
    config = _json(path, archive, name)
    entries = config.get("config", {}) if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _refuse(path, f"{name} is not a payload config")
    for fqn, meta in entries.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False:
            raise _refuse(path, f"{fqn!r} in {name} is pickled")
        if not re.fullmatch(prefix + r"\d+", str(meta.get("path_name"))):
            raise _refuse(path, f"{fqn!r} in {name} is not a plain tensor ({meta.get('path_name')!r})")


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _safe_target(target: str) -> bool:
    if target.startswith("_operator."):
        return target[len("_operator.") :] in _OPERATOR_FUNCTIONS
    return any(p.fullmatch(target) for p in _TARGET_PATTERNS)


def _safe_expression(text: str) -> bool:
    """Whether ``sympify(text)`` can only build an expression: symbols, numbers, SymPy functions, operators."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return False
    for token in tokens:
        kind, value = token.type, token.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER) or kind == tokenize.NUMBER:
            continue
        if kind == tokenize.NAME:
            # Builtins (eval, open, chr, getattr, ...) are lower-case; SymPy's functions are capitalised.
            if value.startswith("_") or not (value[0].isupper() or value in _EXPRESSION_WORDS or _is_symbol(value)):
                return False
        elif kind == tokenize.STRING:
            if not _SYMBOL_NAME.fullmatch(value):
                return False
        elif kind != tokenize.OP or value not in _EXPRESSION_OPERATORS:
            return False  # no attribute access, subscripts, lambdas or anything else
    return True


def _is_symbol(name: str) -> bool:
    """A shape symbol such as ``s0`` or ``u12``."""
    return re.fullmatch(r"[a-z]+\d+", name) is not None


def _check_graph(path: Path, archive: zipfile.ZipFile, name: str) -> None:
    program = _json(path, archive, name)
    if not isinstance(program, dict):
        raise _refuse(path, f"{name} is not a serialized program")
    if program.get("guards_code"):
        raise _refuse(path, f"{name} carries guard code (Python source run when the program is loaded)")
    for key, value in _walk(program):
        if key == "target" and isinstance(value, str) and not _safe_target(value):
            raise _refuse(path, f"a node of {name} calls {value!r}, not a registered operator")
        if key == "expr_str" and isinstance(value, str) and not _safe_expression(value):
            raise _refuse(path, f"{name} holds the symbolic expression {value[:60]!r}, which is not plain arithmetic")


def _check_sample_inputs(path: Path, archive: zipfile.ZipFile, name: str) -> None:
    """torch.export.load retries the sample inputs with weights_only=False when the safe load fails: it must not."""
    data = archive.read(name)
    if not data:
        return
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure would send PyTorch's loader to its unsafe fallback
        raise _refuse(path, f"{name} does not load with weights_only=True") from None


def check_program_archive(path: str | Path) -> None:
    """Refuse (one line) a ``.pt2`` file whose loading would run code from it; see the module docstring.

    Raises:
        ConfigError: naming the file and the member or entry that is refused.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"model.backbone=export:{path}: not a torch.export archive (.pt2 is a zip file)")
    with zipfile.ZipFile(path) as archive:
        members = _members(path, archive)
        models = [rel for rel in members if rel.startswith("models/")]
        if not models:
            raise ConfigError(f"model.backbone=export:{path}: no program in the archive (models/*.json)")
        for relative, name in members.items():
            if relative.endswith("_weights_config.json"):
                _check_payloads(path, archive, name, "weight_")
            elif relative.endswith("_constants_config.json"):
                _check_payloads(path, archive, name, "tensor_")
            elif relative.startswith("models/"):
                _check_graph(path, archive, name)
            elif relative.startswith("data/sample_inputs/"):
                _check_sample_inputs(path, archive, name)
