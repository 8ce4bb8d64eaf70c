"""The ``.lorefd`` bundle file: a safetensors file whose metadata holds a checksummed manifest.

The file level only -- header, checksums, reading and writing tensors -- so that what reads
weights from a bundle (initial weights, :func:`lorefd.models.xception.load_body_weights`)
builds no detector and imports none; the format itself, and loading a detector from it, are
described in :mod:`lorefd.models.bundle`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorefd.errors import UserError
from lorefd.utils import atomic_path
from lorefd.version import __version__

if TYPE_CHECKING:
    import torch

FORMAT = "lorefd-bundle"
BUNDLE_VERSION = 2
SUFFIX = ".lorefd"
_CHUNK = 1 << 22
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
RESERVED_PREFIX = "onnx."  # bundle tensors that are not weights (models/graph.py)


class BundleError(UserError, ValueError):
    """A bundle that is missing, corrupted, of another version, or not a bundle at all."""


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header and the byte offset where tensor data starts."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise BundleError(f"not a lorefd bundle (file too short: {size} bytes): {path}")
            (n,) = struct.unpack("<Q", head)
            if n <= 0 or n > _MAX_HEADER or 8 + n > size:
                raise BundleError(f"not a lorefd bundle (no safetensors header): {path}")
            raw = fh.read(n)
    except OSError as exc:
        raise BundleError(f"cannot read bundle {path}: {exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"not a lorefd bundle or corrupted bundle (bad header): {path}") from exc
    if not isinstance(header, dict):
        raise BundleError(f"not a lorefd bundle (bad header): {path}")
    return header, 8 + n


def _tensors_sha256(header: dict[str, Any]) -> str:
    """SHA-256 of the tensor table (names, dtypes, shapes, offsets) in canonical JSON."""
    table = {k: v for k, v in header.items() if k != "__metadata__"}
    return hashlib.sha256(json.dumps(table, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def _payload_sha256(path: Path, offset: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_bundle_header(path: str | Path, verify: bool = True, old: bool = False,
                       pinned: tuple[Path, str] | None = None) -> dict[str, Any]:
    """The manifest of a bundle, after checking format, version, the tensor table and
    (``verify``) the tensor data. ``old``: accept a version 1 bundle (no tensor-table
    checksum), for re-sealing it. ``pinned``: ``(file, manifest digest)``: that file is refused
    unless its manifest has that digest (the shipped model,
    :func:`lorefd.models.bundle.read_bundle_header`).

    Raises :class:`BundleError` with a one-line reason; reads no weights into memory.
    """
    path = Path(path)
    if path.is_dir():
        hint = (" (a checkpoint folder: export it first with `lorefd export "
                f"{path} --out model{SUFFIX}`)") if (path / "config.json").is_file() \
            or (path / "best").is_dir() or (path / "last").is_dir() else ""
        raise BundleError(f"{path} is a folder, not a bundle file{hint}")
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}")
    header, offset = _read_header(path)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise BundleError(f"not a lorefd bundle (format {meta.get('format')!r}): {path}")
    try:
        version = int(meta.get("bundle_version", ""))
    except ValueError:
        raise BundleError(f"corrupted bundle: bad version field "
                          f"{meta.get('bundle_version')!r}: {path}") from None
    if version > BUNDLE_VERSION:
        raise BundleError(f"bundle version {version} is newer than this lorefd supports "
                          f"({BUNDLE_VERSION}); upgrade lorefd (lorefd {__version__}): {path}")
    if version < 1:
        raise BundleError(f"unsupported bundle version {version}: {path}")
    if version < BUNDLE_VERSION and not old:
        raise BundleError(f"bundle version {version} does not checksum its tensor table; "
                          f"re-seal it: lorefd export {path} --out NEW{SUFFIX}")
    text = meta.get("manifest", "")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if digest != meta.get("manifest_sha256"):
        raise BundleError(f"corrupted bundle: manifest checksum mismatch: {path}")
    if pinned is not None and digest != pinned[1] \
            and path.resolve() == Path(pinned[0]).resolve():
        raise BundleError(f"refused {path}: the model shipped with lorefd was modified (manifest "
                          f"SHA-256 {digest[:12]}..., this lorefd ships "
                          f"{pinned[1][:12]}...); reinstall lorefd (replaced on "
                          "purpose: set SHIPPED_MANIFEST_SHA256 in lorefd/models/bundle.py)")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(f"corrupted bundle: manifest is not JSON: {path}") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"corrupted bundle: manifest is not an object: {path}")
    if version >= 2 and _tensors_sha256(header) != manifest.get("tensors_sha256"):
        raise BundleError(f"corrupted bundle: tensor table checksum mismatch (a name, dtype, "
                          f"shape or offset was changed): {path}")
    if verify and _payload_sha256(path, offset) != manifest.get("payload_sha256"):
        raise BundleError(f"corrupted bundle: checksum mismatch (weights damaged or "
                          f"truncated): {path}")
    return manifest


def write_bundle(path: str | Path, weights: dict[str, torch.Tensor],
                 manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``weights`` + ``manifest`` as a bundle at ``path`` (atomic); returns the manifest
    as stored (with ``format``, versions and ``payload_sha256`` filled in)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    manifest = {"format": FORMAT, "bundle_version": BUNDLE_VERSION, "lorefd_version": __version__,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                **manifest, "num_tensors": len(tensors)}
    with atomic_path(path, suffix=SUFFIX) as tmp:
        # The checksum covers the tensor data, which is laid out independently of the metadata:
        # write once without it, hash the payload, write again with it (same tensor bytes).
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
        header, offset = _read_header(tmp)
        manifest["payload_sha256"] = _payload_sha256(tmp, offset)
        manifest["tensors_sha256"] = _tensors_sha256(header)
        text = json.dumps(manifest, sort_keys=True, default=str)
        save_file(tensors, str(tmp), metadata={
            "format": FORMAT, "bundle_version": str(BUNDLE_VERSION), "manifest": text,
            "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()})
        header, offset = _read_header(tmp)
        if (_payload_sha256(tmp, offset) != manifest["payload_sha256"]
                or _tensors_sha256(header) != manifest["tensors_sha256"]):  # pragma: no cover
            raise BundleError("internal error: tensor payload changed between writes")
    return manifest


def read_bundle_weights(path: str | Path, pinned: tuple[Path, str] | None = None
                        ) -> dict[str, torch.Tensor]:
    """The weights of a bundle (every tensor but the reserved ``onnx.*`` ones, as stored),
    after :func:`read_bundle_header` checked the file and its checksums; no detector built."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_bundle_header(path, verify=True, pinned=pinned)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"corrupted bundle {path}: {type(exc).__name__}: {exc}") from exc
    return {k: v for k, v in tensors.items() if not k.startswith(RESERVED_PREFIX)}


__all__ = ["BUNDLE_VERSION", "FORMAT", "RESERVED_PREFIX", "SUFFIX", "BundleError",
           "read_bundle_header", "read_bundle_weights", "write_bundle"]
