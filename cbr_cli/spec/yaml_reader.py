"""Read a pipeline YAML file into a tree of :class:`Value` nodes that know where they came from.

Loading uses PyYAML's *safe* composer only (no object construction at all): the node
graph is converted here, so every value carries ``FILE:LINE:COL`` and its key path
(``layers[0].conv.stride``) for error messages, duplicate keys are rejected, and
anchors/aliases resolve to plain data.  Command-line flags are wrapped in the same
:class:`Value` type (their "where" is the flag name), so one validator
(:mod:`cbr_cli.spec.pipeline_spec`) serves both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from cbr_cli.errors import CbrError

MAX_CONFIG_BYTES = 1024 * 1024
MAX_VALUES = 100_000
"""Most values a config may hold once aliases are expanded (refuses "billion laughs")."""
MAX_DEPTH = 50
"""Deepest nesting of mappings and lists a config may have."""

_COLLECTION_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


@dataclass
class Value:
    """A config value with its origin.

    Attributes
    ----------
    data : Any
        ``dict[str, Value]`` for mappings, ``list[Value]`` for sequences, or a scalar
        (``str``, ``int``, ``float``, ``bool`` or ``None``).
    where : str
        ``FILE:LINE:COL: key.path`` for YAML values, the flag name (``--stride``) for flags.
    path : str
        The key path alone, e.g. ``layers[0].conv.stride``.
    base_dir : str
        Directory that relative file paths in this value are relative to.
    """

    data: Any
    where: str
    path: str = ""
    base_dir: str = "."
    key_where: dict[str, str] = field(default_factory=dict)
    """For mappings: where each key was written (for unknown-key errors)."""

    def error(self, message: str) -> CbrError:
        """A CbrError located at this value: ``WHERE: message``."""
        return CbrError(f"{self.where}: {message}")

    def plain(self) -> Any:
        """The value as plain Python data (dicts, lists, scalars), origins dropped."""
        if isinstance(self.data, dict):
            return {k: v.plain() for k, v in self.data.items()}
        if isinstance(self.data, list):
            return [v.plain() for v in self.data]
        return self.data


def from_flag(data: Any, flag: str) -> Value:
    """Wrap a command-line value (scalar or list of scalars) as a :class:`Value`."""
    if isinstance(data, (list, tuple)):
        return Value([from_flag(item, flag) for item in data], flag, flag, os.getcwd())
    return Value(data, flag, flag, os.getcwd())


def from_plain(data: Any, where: str, path: str = "", base_dir: str = ".") -> Value:
    """Wrap plain nested data (e.g. a resolved pipeline) as a :class:`Value` tree."""
    if isinstance(data, dict):
        children = {
            str(k): from_plain(v, where, _join(path, str(k)), base_dir) for k, v in data.items()
        }
        return Value(children, where, path, base_dir)
    if isinstance(data, (list, tuple)):
        items = [from_plain(v, where, f"{path}[{i}]", base_dir) for i, v in enumerate(data)]
        return Value(items, where, path, base_dir)
    return Value(data, where, path, base_dir)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def load_yaml(path: str | os.PathLike[str]) -> Value:
    """Parse ``path`` safely into a :class:`Value` tree.

    Raises
    ------
    CbrError
        For a missing/unreadable file, text that is not UTF-8, a YAML syntax error (with
        line and column), duplicate keys, non-string keys, tags, merge keys, recursive
        aliases, more than :data:`MAX_VALUES` values after expanding aliases, nesting
        deeper than :data:`MAX_DEPTH`, or a document that is not exactly one.
    """
    import yaml

    from cbr_cli.io.readfile import read_regular

    name = os.fspath(path)
    raw = read_regular(name, MAX_CONFIG_BYTES, lambda reason: _file_error(name, reason))
    text = _decode_utf8(raw, name)

    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise CbrError(f"{name}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        raise CbrError(_yaml_error(name, text, exc)) from None
    if len(documents) != 1 or documents[0] is None:
        raise CbrError(f"{name}: expected exactly one YAML document with a 'layers:' list")
    base_dir = os.path.dirname(os.path.abspath(name))
    return _Converter(name, base_dir).convert(documents[0], "", ())


def _file_error(name: str, reason: str) -> CbrError:
    """The error for a config file that cannot be read (``reason`` from cbr_cli.io.readfile)."""
    if reason == "file not found":
        return CbrError(f"{name}: config file not found")
    if reason.startswith("larger than"):
        return CbrError(f"{name}: config file is {reason}")
    if reason.startswith("is "):  # "is a FIFO, not a regular file"
        return CbrError(f"{name}: {reason} (expected a YAML config file)")
    return CbrError(f"{name}: cannot read config file ({reason})")


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what PyYAML counts as one


def _yaml_error(name: str, text: str, exc: Exception) -> str:
    """One line ``FILE:LINE:COL: what`` for any error PyYAML raises on ``text``.

    PyYAML's own messages span several lines (with a snippet and a caret), and its
    ReaderError (a NUL byte, an ESC or another character YAML forbids) has only a
    character offset: both become one line with the line and column.
    """
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        problem = " ".join((exc.problem or exc.context or "invalid YAML").split())
        if exc.context and exc.problem and exc.context_mark is not None:
            at = f"{exc.context_mark.line + 1}:{exc.context_mark.column + 1}"
            problem += f" ({' '.join(exc.context.split())} at {at})"
        return f"{where}: YAML syntax error: {problem}"
    if isinstance(exc, yaml.reader.ReaderError) and 0 <= exc.position <= len(text):
        before = text[: exc.position]
        breaks = list(_LINE_BREAK.finditer(before))
        line = len(breaks) + 1
        column = exc.position - (breaks[-1].end() if breaks else 0) + 1
        code = exc.character if isinstance(exc.character, int) else ord(text[exc.position])
        return (
            f"{name}:{line}:{column}: character {chr(code)!r} (U+{code:04X}) is not allowed "
            "in YAML (only printable characters, tab and line breaks)"
        )
    return f"{name}: YAML error: {' '.join(str(exc).split())}"


def _decode_utf8(raw: bytes, name: str) -> str:
    """``raw`` as UTF-8 text; an error names the line and column of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8")) + 1
        raise CbrError(
            f"{name}:{line}:{column}: config file is not UTF-8 text "
            f"({exc.reason} 0x{raw[exc.start]:02x})"
        ) from None


class _Converter:
    """Node graph -> :class:`Value` tree, with the limits that keep aliases harmless.

    An alias is converted again at every place it is used (each use has its own key
    path), so the size of the result is counted, and an alias inside its own anchor
    (which would never end) is refused.
    """

    def __init__(self, name: str, base_dir: str) -> None:
        self.name = name
        self.base_dir = base_dir
        self.count = 0

    def convert(self, node: Any, path: str, parents: tuple[int, ...]) -> Value:
        import yaml

        name, base_dir = self.name, self.base_dir
        mark = node.start_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}: {path or '(top level)'}"
        self.count += 1
        if self.count > MAX_VALUES:
            raise CbrError(
                f"{where}: more than {MAX_VALUES} values after expanding aliases (*name)"
            )
        if isinstance(node, yaml.ScalarNode):
            return Value(_scalar(node, where), where, path, base_dir)
        if id(node) in parents:
            raise CbrError(f"{where}: alias refers to a value that contains it (recursive YAML)")
        if len(parents) >= MAX_DEPTH:
            raise CbrError(f"{where}: nested too deeply (more than {MAX_DEPTH} levels)")
        if node.tag not in _COLLECTION_TAGS:
            raise CbrError(f"{where}: YAML tag {node.tag!r} is not allowed in a cbr config")
        inner = (*parents, id(node))
        if isinstance(node, yaml.SequenceNode):
            items = [self.convert(item, f"{path}[{i}]", inner) for i, item in enumerate(node.value)]
            return Value(items, where, path, base_dir)
        children: dict[str, Value] = {}
        key_where: dict[str, str] = {}
        key_position: dict[str, str] = {}
        for key_node, value_node in node.value:
            kmark = key_node.start_mark
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            kpath = _join(path, key) if isinstance(key, str) else path or "(top level)"
            position = f"{name}:{kmark.line + 1}:{kmark.column + 1}"
            kwhere = f"{position}: {kpath}"
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise CbrError(
                    f"{kwhere}: merge keys ('<<') are not supported; write the keys out "
                    "(an alias of a whole mapping, '*name', is fine)"
                )
            if not isinstance(key, str) or key_node.tag not in (
                "tag:yaml.org,2002:str",
                "tag:yaml.org,2002:int",
                "tag:yaml.org,2002:float",
                "tag:yaml.org,2002:bool",
            ):
                got = repr(key) if isinstance(key, str) else "a mapping or list"
                raise CbrError(f"{kwhere}: keys must be plain names (got {got})")
            if key in children:
                first = key_position[key]
                raise CbrError(f"{kwhere}: duplicate key {key!r} (first given at {first})")
            key_where[key] = kwhere
            key_position[key] = position
            children[key] = self.convert(value_node, kpath, inner)
        return Value(children, where, path, base_dir, key_where)


def _scalar(node: Any, where: str) -> Any:
    """Resolve a scalar node by its tag, the way YAML 1.1's safe loader would."""
    import yaml

    tag = node.tag
    text = node.value
    if tag == "tag:yaml.org,2002:str":
        return text
    if tag in (
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
        "tag:yaml.org,2002:bool",
        "tag:yaml.org,2002:null",
    ):
        constructor = yaml.SafeLoader.yaml_constructors[tag]
        try:
            return constructor(yaml.SafeLoader(""), node)
        except ValueError as exc:  # e.g. an int of more than Python's 4300 digits
            reason = " ".join(str(exc).split(";")[0].split())
            shown = repr(text) if len(text) <= 30 else f"{text[:12]!r}... ({len(text)} characters)"
            raise CbrError(f"{where}: cannot read {shown} as a number ({reason})") from None
    raise CbrError(f"{where}: YAML tag {tag!r} is not allowed in a cbr config")
