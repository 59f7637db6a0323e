"""Lossless dict, JSON and YAML forms of a spec, atomic files, and one loader for any source."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import yaml

from search_spaces.blockstring import from_string
from search_spaces.errors import DataError, MobilenasError, SpecError
from search_spaces.reference import REFERENCES, reference_spec
from search_spaces.spec import ArchSpec, BlockSpec, HeadSpec, StemSpec

FORMAT_VERSION = 1
MAX_SPEC_FILE_BYTES = 1 << 20  # a spec of 64 blocks takes a few KB in any form
_TOP_KEYS = {"format", "blocks", "stem", "head", "num_classes", "resolution", "in_channels"}


def to_dict(spec: ArchSpec) -> dict[str, Any]:
    """A plain, JSON/YAML-ready dict."""
    data = asdict(spec)
    data["blocks"] = [dict(b) for b in data["blocks"]]
    return {"format": FORMAT_VERSION, **data}


def _build(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SpecError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(names))}"
        )
    try:
        return cls(**data)
    except SpecError as err:
        message = str(err).split(": ", 1)[-1]
        raise SpecError(f"{where}: {message}") from None
    except TypeError as err:  # missing required fields
        raise SpecError(f"{where}: {err}") from None


def from_dict(data: Any) -> ArchSpec:
    """Inverse of :func:`to_dict`; every problem names the field it is in."""
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise SpecError(
            f"spec: unknown field(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    version = data.get("format", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise SpecError(f"spec: format {version!r} is not supported; expected {FORMAT_VERSION}")
    blocks_data = data.get("blocks")
    if not isinstance(blocks_data, list):
        raise SpecError("spec: 'blocks' must be a list of bneck blocks")
    blocks = tuple(_build(BlockSpec, b, f"blocks[{i}]") for i, b in enumerate(blocks_data))
    kwargs: dict[str, Any] = {"blocks": blocks}
    if "stem" in data:
        kwargs["stem"] = _build(StemSpec, data["stem"], "stem")
    if "head" in data:
        kwargs["head"] = _build(HeadSpec, data["head"], "head")
    for key in ("num_classes", "resolution", "in_channels"):
        if key in data:
            kwargs[key] = data[key]
    return ArchSpec(**kwargs)


def to_json(spec: ArchSpec) -> str:
    return json.dumps(to_dict(spec), indent=2) + "\n"


def to_yaml(spec: ArchSpec) -> str:
    return yaml.safe_dump(to_dict(spec), sort_keys=False)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(temp_path)`` on a temporary file beside ``path``, then rename it onto
    ``path``: a crash never leaves a half-written file. The one atomic writer of the project."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        # after writing: mkstemp's 0600, or a writer that recreates the file (safetensors),
        # would make the saved file private
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_spec(spec: ArchSpec, path: str | os.PathLike[str]) -> Path:
    """Save as JSON (``.json``), YAML (``.yaml``/``.yml``) or the string form (``.txt``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        text = to_json(spec)
    elif suffix in (".yaml", ".yml"):
        text = to_yaml(spec)
    elif suffix == ".txt":
        text = str(spec) + "\n"
    else:
        raise SpecError(f"{path}: unknown spec file type {suffix!r}; use .json, .yaml, .yml or .txt")
    return atomic_write_text(path, text)


def read_json_object(path: Path, *, max_bytes: int, what: str,
                     error: type[MobilenasError] = DataError) -> dict[str, Any]:
    """The JSON object (mapping) in the file ``path``, read as untrusted: at most ``max_bytes``, valid
    JSON, a mapping; else ``error`` naming the file and ``what`` it should have been."""
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{path}: {size:,} bytes, more than a {what}'s {max_bytes:,}: over the limit, so not a "
                    f"{what}")
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # JSON and Unicode errors are ValueErrors
        raise error(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: not a {what} (expected a JSON object)")
    return data


def load_spec_file(path: str | os.PathLike[str]) -> ArchSpec:
    """Load a spec saved by :func:`save_spec`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    size = path.stat().st_size
    if size > MAX_SPEC_FILE_BYTES:
        raise SpecError(f"{path}: {size:,} bytes is too large for a spec file "
                        f"(at most {MAX_SPEC_FILE_BYTES:,})")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot be read as text ({err})") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                raise SpecError(f"not valid JSON ({err})") from None
            return from_dict(data)
        if suffix in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise SpecError(f"not valid YAML ({err})") from None
            return from_dict(data)
        if suffix == ".txt":
            return from_string(text.strip())
    except SpecError as err:
        raise SpecError(f"{path}: {err}") from None
    raise SpecError(f"{path}: unknown spec file type {suffix!r}; use .json, .yaml, .yml or .txt")


def load_spec(source: str, *, num_classes: int | None = None, resolution: int | None = None) -> ArchSpec:
    """A spec from a reference name (``mobilenet_v3_large``), a spec file, or a spec string.

    ``num_classes`` and ``resolution`` override the loaded values when given.
    """
    source = source.strip()
    if source in REFERENCES:
        spec = reference_spec(source)
    elif Path(source).suffix.lower() in (".json", ".yaml", ".yml", ".txt"):
        spec = load_spec_file(source)
    elif " " in source or source.startswith(("ir_", "in_", "stem_")):
        spec = from_string(source)
    else:
        raise SpecError(
            f"arch {source!r} is not a reference ({', '.join(REFERENCES)}), a spec file "
            "(.json/.yaml/.txt) or a spec string ('ir_k3_e64_c24_s2_re ...')"
        )
    changes: dict[str, int] = {}
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if resolution is not None:
        changes["resolution"] = resolution
    return spec.replace(**changes) if changes else spec
