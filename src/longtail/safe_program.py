"""Checking a ``.pt2`` archive from elsewhere before ``torch.export.load`` sees it, so that it runs nothing it holds.

``torch.export.load`` trusts its file: it unpickles weights and constants
marked ``use_pickle`` (``torch.load(weights_only=False)``), retries sample
inputs that ``weights_only`` refuses as a full pickle, unpickles "opaque" and
script-object constants, loads AOTInductor shared libraries, ``exec``\\ s guard
code, evaluates shape expressions with ``sympy.sympify`` (``eval``), and resolves
a node's target to any attribute of ``torch`` (``torch.os.system`` included);
names from the file end up in the Python source that ``.module()`` generates.

:func:`check_archive` accepts only what ``torch.export.save`` writes for a
program of plain ATen operators with raw tensor weights, which is what
``longtail export`` writes, and refuses anything else with one line. Every rule
is an allow-list: an entry, a field or an operator that is not known to be inert
is refused, so a newer PyTorch that adds one fails closed. Operators: native
ATen functions whose signatures take and give only tensors, numbers and mode
names (:func:`_refused_operator`), so the program computes tensors and can open
no file, run no Python, start no process and reach no network.
"""

from __future__ import annotations

import functools
import io
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from .errors import LongtailError, shown
from .safe_text import parse_json
from .safe_torch import load_tensors

_SHOWN = 60  # characters of a name quoted in a message: a crafted file's names can be any length
MODEL = "model"  # the program's name inside the archive (torch.export.save writes one, "model")
# Entries of the archive, relative to its top folder: what torch.export.save writes for one raw-tensor program.
_ENTRY = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    rf"|models/{MODEL}\.json|data/sample_inputs/{MODEL}\.pt"
    rf"|data/weights/{MODEL}_weights_config\.json|data/weights/weight_[0-9]+"
    rf"|data/constants/{MODEL}_constants_config\.json|data/constants/tensor_[0-9]+"
    r"|extra/[A-Za-z0-9_.-]+"
)
_WEIGHTS_CONFIG = f"data/weights/{MODEL}_weights_config.json"
_CONSTANTS_CONFIG = f"data/constants/{MODEL}_constants_config.json"
_SAMPLE_INPUTS = f"data/sample_inputs/{MODEL}.pt"
_PROGRAM = f"models/{MODEL}.json"

# Names that become attribute paths or identifiers in generated code: dotted names of letters, digits and "_" (a
# top-level nn.Sequential names its weights "0.weight"; a digit is no code).
_DOTTED = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER_FIELDS = ("as_name", "forward_arg_names")  # placeholder and symbol names: no dots
_NAME_FIELDS = ("parameter_name", "buffer_name", "tensor_constant_name", "user_input_name", "fqn", "name")
_NAME_FIELDS += _IDENTIFIER_FIELDS
# Graph fields that only programs with script objects, sub-graphs or higher-order operators have.
_REFUSED_FIELDS = ("as_custom_obj", "as_graph", "as_operator", "custom_obj", "custom_obj_values", "token", "as_token")
_OPERATOR_TARGETS = {  # node targets outside torch.ops.aten: Python's arithmetic on symbolic sizes
    f"_operator.{name}"
    for name in ("getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pos", "abs")
    + ("eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")
} | {f"math.{name}" for name in ("ceil", "floor", "trunc", "sqrt")}
_ATEN_TARGET = re.compile(r"torch\.ops\.aten\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
# An ATen operator is allowed when (1) it is a native ATen function (registered with the dispatcher; the
# TorchScript built-ins that share the aten namespace, aten::save, aten::warn, aten::manual_seed, string and
# list operations, are not) and (2) its signature takes and gives only tensors, numbers, dtypes, layouts,
# devices and memory formats, with strings only as the mode arguments below: no file name (aten::from_file),
# no storage, stream, future or script object. (3) These native ones pass both and still touch
# the process (a global FFT plan cache, a warning, printing); with aten.save and aten.from_file for clarity.
_REFUSED_OPERATORS = frozenset(
    {"save", "from_file", "_print", "warn", "wait", "record_stream", "_test_warn_in_autograd"}
    | {"_cufft_clear_plan_cache", "_cufft_set_plan_cache_max_size"}
)
_VALUE_TYPE = re.compile(
    r"(Optional\[)?(List\[)?(Optional\[)?(Tensor|SymInt|int|float|bool|complex|number|Scalar|ScalarType|Layout|Device"
    r"|MemoryFormat|Generator)\]?\]?\]?"  # a Generator cannot be serialized: random operators take none from a file
)
# An operator's string arguments: only these, which name a mode of the computation (gelu's "tanh", a padding
# "reflect", einsum's equation, searchsorted's side, a LAPACK driver) or the text of a failed runtime shape
# assertion; any other (a file name) is refused.
_STRING_ARGUMENTS = frozenset(
    "approximate mode padding pad_mode padding_side reduce reduction rounding_mode interpolation UPLO ord "
    "indexing equation algorithm side driver assert_msg".split()
)
# Shape expressions, as sympy's srepr writes them ("Add(Symbol('s34', integer=True), Integer(1))"); sympy.sympify
# evaluates them. Allowed: size symbols, small numbers, these functions and keywords; no attribute access, no
# other strings, no powers or shifts (Pow(Integer(9), Integer(10**19)) would not finish).
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_NUMBER = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")
_EXPR_NAMES = frozenset(
    "Symbol Integer Rational Float Add Mul FloorDiv Mod PythonMod CleanDiv CeilDiv CeilToInt FloorToInt TruncToInt "
    "IntTrueDiv FloatTrueDiv ToFloat Identity ModularIndexing Where Max Min Eq Ne Ge Gt Le Lt And Or Not "
    "True False true false integer positive nonnegative negative nonpositive real finite nonzero precision".split()
)
_EXPR_TOKEN = re.compile(r"\s+|'[^']{0,40}'|[0-9]+(\.[0-9]+)?|[A-Za-z_][A-Za-z0-9_]*|//|[<>=!]=|[-+*/%(),<>=]")
MAX_EXPR = 400  # characters of one shape expression
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # a carriage return would end a comment in generated code


class UnsafeProgramError(LongtailError):
    """A ``.pt2`` archive that ``torch.export.load`` could run code from, or that is not a plain program.

    Callers re-raise it as their own kind (an export artifact, a backbone file) with the same one line.
    """


def _fail(path: str, why: str) -> UnsafeProgramError:
    """A file laid out as torch.export.save writes one, holding something that could run code or is malformed."""
    return UnsafeProgramError(f"{path}: refusing to load this program file: {why}")


def _foreign(path: str, why: str) -> UnsafeProgramError:
    """A zip archive that is not laid out as torch.export.save writes one."""
    return UnsafeProgramError(f"{path}: not a torch.export program ({why})")


def load_program(path: str | Path, extra_files: dict[str, Any] | None = None) -> torch.export.ExportedProgram:
    """``torch.export.load`` of ``path``, only after :func:`check_archive` refused everything in it that could
    run, on the same open handle (what was checked is what is loaded, even if the path is replaced meanwhile).

    ``extra_files``: as ``torch.export.load``'s (filled in). torch's own warning traceback is silenced: the
    caller turns a failure into one line.

    Raises:
        UnsafeProgramError: from :func:`check_archive`.
        Exception: whatever ``torch.export.load`` raises for an archive it cannot read.
    """
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # it logs a traceback as a warning before raising; the caller's line is enough
    try:
        with open(path, "rb") as handle:
            check_archive(handle, str(path))
            # Trusted only now: check_archive above refused everything in this same handle that could run.
            return torch.export.load(handle, extra_files=extra_files)
    finally:
        logger.setLevel(level)


def check_archive(handle: IO[bytes], path: str) -> None:
    """Refuse, with one line naming ``path``, an archive that would make ``torch.export.load`` run anything.

    ``handle`` is the open file, read here and rewound; load from the very same handle afterwards.

    Raises:
        UnsafeProgramError: naming the entry, the weight or the field that is refused.
    """
    names = _zip_entries(handle, path)
    handle.seek(0)
    reader = torch._C.PyTorchFileReader(handle)  # the reader torch.export.load itself uses
    records = set(reader.get_all_records())
    if records != names:
        raise _fail(path, "PyTorch's zip reader and Python's read its directory differently")
    for required in ("archive_format", "archive_version", _PROGRAM, _WEIGHTS_CONFIG, _CONSTANTS_CONFIG):
        if required not in records:
            raise _foreign(path, f"no {required} entry")
    _check_payloads(path, _read_json(reader, _WEIGHTS_CONFIG, path), "weight", records)
    _check_payloads(path, _read_json(reader, _CONSTANTS_CONFIG, path), "constant", records)
    if _SAMPLE_INPUTS in records:
        _check_sample_inputs(reader.get_record(_SAMPLE_INPUTS), path)
    _check_program(_read_json(reader, _PROGRAM, path), path)
    handle.seek(0)


def _zip_entries(handle: IO[bytes], path: str) -> set[str]:
    """The entry names below the archive's one top folder; every entry stored uncompressed and allowed."""
    try:
        with zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise _foreign(path, f"not a readable zip archive: {error.__class__.__name__}") from None
    if not infos:
        raise _foreign(path, "an empty zip archive")
    top = infos[0].filename.split("/", 1)[0]
    names: set[str] = set()
    for info in infos:
        folder, _, name = info.filename.partition("/")
        entry = shown(info.filename, _SHOWN)
        if folder != top or not _ENTRY.fullmatch(name):
            raise _foreign(path, f"unexpected entry {entry}; only torch.export.save's tensors and JSON")
        if name in names:
            raise _fail(path, f"entry {entry} appears twice")
        # torch.export.save stores entries as they are; a compressed one could inflate without bound.
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise _fail(path, f"entry {entry} is compressed (torch.export.save stores entries raw)")
        names.add(name)
    return names


def _read_json(reader: Any, name: str, path: str) -> Any:
    """An entry as JSON, bounded in nesting (:func:`~longtail.safe_text.parse_json`; a program nests about 10)."""
    try:
        record = reader.get_record(name)
    except RuntimeError as error:
        raise _fail(path, f"{name} cannot be read ({error.__class__.__name__})") from None
    return parse_json(record, f"{path}: refusing to load this program file: {name}", error=UnsafeProgramError)


def _check_payloads(path: str, config: Any, kind: str, records: set[str]) -> None:
    """Every weight (or constant) is a raw tensor record: never ``use_pickle``, never a script or opaque object."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise _fail(path, f"its {kind} table is not a mapping")
    folder, prefix = ("data/weights/", "weight_") if kind == "weight" else ("data/constants/", "tensor_")
    for fqn, meta in entries.items():
        if not _DOTTED.fullmatch(fqn):
            raise _fail(path, f"{kind} name {shown(fqn, _SHOWN)} is not a dotted identifier")
        if not isinstance(meta, dict):
            raise _fail(path, f"{kind} {fqn}: its entry is not a mapping")
        if meta.get("use_pickle") is not False:
            raise _fail(path, f"{kind} {fqn} is stored as a pickle, which can run code; only raw tensors are loaded")
        record = meta.get("path_name")
        if not isinstance(record, str) or not record.startswith(prefix) or folder + record not in records:
            raise _fail(path, f"{kind} {fqn}: record {shown(record, _SHOWN)} is not a raw tensor entry of the archive")
        if not isinstance(meta.get("tensor_meta"), dict):
            raise _fail(path, f"{kind} {fqn}: no tensor description")


def _check_sample_inputs(data: bytes, path: str) -> None:
    """Sample inputs must load with ``weights_only``: torch would otherwise retry them as a full pickle."""
    if not data:
        return
    try:
        load_tensors(io.BytesIO(data))
    except Exception as error:  # noqa: BLE001 - the restricted unpickler raises many types
        raise _fail(path, f"{_SAMPLE_INPUTS} is not plain tensors ({error.__class__.__name__})") from None


def _check_program(program: Any, path: str) -> None:
    """The serialized program: no guard code, ATen operators only, plain names and shape expressions."""
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise _fail(path, f"{_PROGRAM} is not a serialized exported program")
    if program.get("guards_code"):
        raise _fail(path, "it carries guard code, which torch.export would run as Python")
    if program["graph_module"].get("treespec_namedtuple_fields"):
        raise _fail(path, "its inputs or outputs are named tuples (longtail exports take and give one tensor)")
    for symbol in program.get("range_constraints") or {}:
        if not _SYMBOL.fullmatch(symbol):
            raise _fail(path, f"range constraint on {shown(symbol, _SHOWN)}, not a size symbol")
    for key, value in _fields(program):
        _check_field(key, value, path)
    for node in program["graph_module"].get("graph", {}).get("nodes", []):
        _check_string_arguments(node, path)


def _fields(tree: Any) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` for every entry of every mapping in a JSON tree, and ``(key, item)`` for each item of a
    list under ``key``: depth-first, without recursion (a crafted file can nest deeper than the stack)."""
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, dict):
            for child_key, value in node.items():
                yield str(child_key), value
                stack.append((str(child_key), value))
        elif isinstance(node, list):
            for item in node:
                yield key, item
                stack.append((key, item))


def _check_field(key: str, value: Any, path: str) -> None:
    """One entry of the program: names, operators and expressions as :func:`check_archive` allows them."""
    if _CONTROL.search(key) or isinstance(value, str) and _CONTROL.search(value):
        raise _fail(path, f"field {shown(key, _SHOWN)} holds control characters")
    if key in _REFUSED_FIELDS and value:
        raise _fail(path, f"its graph uses {key} (script objects, sub-graphs or operator arguments)")
    if isinstance(value, (dict, list)):
        return  # checked item by item
    if key == "target":
        _check_target(value, path)
    elif key == "expr_str":
        _check_expression(value, path)
    elif key in _NAME_FIELDS and value is not None and not (key == "fqn" and value == ""):
        pattern = _IDENTIFIER if key in _IDENTIFIER_FIELDS else _DOTTED
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _fail(path, f"{key} {shown(value, _SHOWN)} is not a plain identifier")


def _check_string_arguments(node: Any, path: str) -> None:
    """A node passes strings only as arguments that select a mode (never a file name: see aten.save)."""
    for argument in node.get("inputs", []) if isinstance(node, dict) else []:
        value = argument.get("arg") if isinstance(argument, dict) else None
        if isinstance(value, dict) and {"as_string", "as_strings"} & set(value):
            if argument.get("name") not in _STRING_ARGUMENTS:
                operator, name = shown(node.get("target"), _SHOWN), shown(argument.get("name"), _SHOWN)
                raise _fail(path, f"operator {operator} takes a string as {name}")


def _check_target(target: Any, path: str) -> None:
    """An ATen operator that exists (an ``OpOverload``), or a Python arithmetic operator on sizes."""
    if isinstance(target, str) and target in _OPERATOR_TARGETS:
        return
    match = _ATEN_TARGET.fullmatch(target) if isinstance(target, str) else None
    if match is None or "__" in target:
        raise _fail(path, f"operator {shown(target, _SHOWN)} is not an ATen operator")
    why = _refused_operator(match.group(1), match.group(2))
    if why:
        raise _fail(path, f"operator {shown(target, _SHOWN)} {why}")


@functools.lru_cache(maxsize=4096)  # a program uses a few dozen; a crafted one may name thousands
def _refused_operator(name: str, overload_name: str) -> str | None:
    """Why ``torch.ops.aten.<name>.<overload_name>`` is refused (see :data:`_REFUSED_OPERATORS`), or None."""
    if name in _REFUSED_OPERATORS:
        return "reaches outside its tensors (files, printing, process-wide settings)"
    try:
        overload = getattr(getattr(torch.ops.aten, name), overload_name)
    except (AttributeError, RuntimeError):
        return "does not exist in this PyTorch"
    if not isinstance(overload, torch._ops.OpOverload):
        return "is not an ATen operator overload"
    schema = overload._schema
    qualified = schema.name + (f".{schema.overload_name}" if schema.overload_name else "")
    if not torch._C._dispatch_has_kernel(qualified):
        return "is a TorchScript built-in, not an ATen tensor operator"
    for argument in schema.arguments:
        kind = str(argument.type)
        if not _VALUE_TYPE.fullmatch(kind) and not (
            kind in ("str", "Optional[str]") and argument.name in _STRING_ARGUMENTS
        ):
            return f"takes {kind} {argument.name!r}: only tensors, numbers and mode names are allowed"
    for returned in schema.returns:
        if not _VALUE_TYPE.fullmatch(str(returned.type)):
            return f"returns {returned.type}: only tensors and numbers are allowed"
    return None


def _check_expression(expression: Any, path: str) -> None:
    """A size expression made of symbols, small numbers, arithmetic and a few sympy functions."""
    if not isinstance(expression, str) or len(expression) > MAX_EXPR:
        raise _fail(path, f"size expression {shown(expression, _SHOWN)} is not a short string")
    position = 0
    while position < len(expression):
        match = _EXPR_TOKEN.match(expression, position)
        if match is None or not _allowed_token(match.group()):
            token = expression[position] if match is None else match.group()
            raise _fail(path, f"size expression {shown(expression, _SHOWN)}: {shown(token, _SHOWN)} is not allowed")
        position = match.end()


def _allowed_token(token: str) -> bool:
    """A token of a size expression: punctuation, a small number, a symbol (quoted or not) or a known name."""
    if token.startswith("'"):
        return bool(_SYMBOL.fullmatch(token[1:-1]) or _NUMBER.fullmatch(token[1:-1]))
    if token[0].isdigit():
        return bool(_NUMBER.fullmatch(token))
    if token[0].isalpha() or token[0] == "_":
        return token in _EXPR_NAMES or bool(_SYMBOL.fullmatch(token))
    return True
