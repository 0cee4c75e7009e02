"""Weight files: the packed ternary export (what a car would run) and the float training checkpoint.

Both are safetensors files (no pickle anywhere) whose metadata holds

* ``format``: ``slimdrive-ternary`` (packed export) or ``slimdrive-checkpoint`` (float training weights),
* ``format_version``: `FORMAT_VERSION`,
* ``config``: the `ModelConfig` as JSON,
* ``checksum``: SHA-256 over the whole file (the header with its metadata and config, then every tensor's
  bytes) as written with this field's 64 hex digits all ``0``; the digest then replaces them in place.

Packed export. Every `BitLinear` weight (ternarised once, offline, with the absmean scale) becomes

* ``<layer>.weight.codes``: uint8, 2 bits per weight, 4 per byte as in bitnet.cpp's I2_S
  (code 0 -> -1, 1 -> 0, 2 -> +1; code 3 never occurs). Weight ``4i + j`` of the row-major flattened tensor
  sits in bits ``2j..2j+1`` of byte ``i``; a tail shorter than 4 is padded with code 1 (zero). A 1-D array
  of ceil(out * in / 4) bytes; as ``in`` is a multiple of 4 it is also the (out, in / 4) row layout the runtime
  kernel reads directly.
* ``<layer>.weight.scale``: float32 (1,), ``mean|W|`` = 1 / s_w, so the layer's weight is ``codes * scale``.

Every other tensor (norm gains, embeddings, heads) is stored as float32, exactly as trained.

Loading reads the header alone first (its length bounded by `MAX_HEADER_BYTES` and the file's size), checks format,
version, that the tensors fill the file exactly and the checksum over the whole file by streaming it, before any
tensor is read or any model built: a header altered to claim a huge model is refused before anything is allocated,
and one changed byte anywhere (a config's ``heads``) is refused naming the file. Then the config, and every
tensor's name, shape and dtype against the model the config builds. Every problem raises `WeightFileError` naming
the file and what is wrong. (The checksum finds damage and edits, not forgery: a file rewritten with a matching
checksum is caught by the shape check only once its config's model is built.)
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from agent.bitlinear import BitLinear, weight_quant
from agent.model import DrivingNet, ModelConfig

# 3: the checksum covers the whole file (2: only the tensors, so an altered config loaded silently; 2 and 3 share the
# network: the two-stage stem and one output head with a brake logit; 1: the old network)
FORMAT_VERSION = 3
PACKED_FORMAT = "slimdrive-ternary"
CHECKPOINT_FORMAT = "slimdrive-checkpoint"
FileFormat = Literal["slimdrive-ternary", "slimdrive-checkpoint"]
MAX_HEADER_BYTES = 1 << 20  # a header lists each tensor in ~100 bytes; the shipped file's is 2.9 kB
_UNSEALED = "0" * 64  # the checksum field's value while the file's digest is computed


class WeightFileError(ValueError):
    """A weight file that cannot be loaded; the message names the file and the problem."""


def pack_ternary(codes: torch.Tensor) -> torch.Tensor:
    """Pack a tensor of {-1, 0, +1} (any shape) into a 1-D uint8 tensor, 4 codes per byte (I2_S mapping)."""
    flat = codes.detach().reshape(-1).to(torch.int16)
    if flat.numel() and (flat.abs() > 1).any():
        raise ValueError("pack_ternary: values must be -1, 0 or +1")
    shifted = (flat + 1).to(torch.uint8)
    pad = (-shifted.numel()) % 4
    shifted = torch.cat([shifted, torch.ones(pad, dtype=torch.uint8)]).view(-1, 4)
    return shifted[:, 0] | (shifted[:, 1] << 2) | (shifted[:, 2] << 4) | (shifted[:, 3] << 6)


def unpack_ternary(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of `pack_ternary`: int8 {-1, 0, +1} of ``shape``. Raises ValueError on a length mismatch or code 3."""
    numel = 1
    for size in shape:
        numel *= size
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (numel + 3) // 4:
        raise ValueError(
            f"unpack_ternary: expected {(numel + 3) // 4} uint8 bytes for shape {tuple(shape)}, "
            f"got {packed.dtype} of shape {tuple(packed.shape)}"
        )
    codes = torch.stack([(packed >> shift) & 3 for shift in (0, 2, 4, 6)], dim=1).reshape(-1)
    if (codes == 3).any():
        raise ValueError("unpack_ternary: code 3 is not a ternary code (corrupt data)")
    return (codes[:numel].to(torch.int8) - 1).reshape(shape)


def ternary_layers(net: torch.nn.Module) -> list[str]:
    """Module names of every BitLinear in ``net``, in registration order."""
    return [name for name, module in net.named_modules() if isinstance(module, BitLinear)]


def _header(path: Path, handle) -> tuple[dict, int, int]:
    """The safetensors header of the open file (JSON), its length and where the checksum value sits in the file;
    raises WeightFileError before reading more than `MAX_HEADER_BYTES`."""
    size = path.stat().st_size
    prefix = handle.read(8)
    if len(prefix) < 8:
        raise WeightFileError(f"{path}: not a readable safetensors file ({size} bytes, shorter than its header)")
    (length,) = struct.unpack("<Q", prefix)
    if length > min(MAX_HEADER_BYTES, size - 8):
        raise WeightFileError(f"{path}: not a readable safetensors file (its header claims {length} bytes; the file "
                              f"has {size}, and a header may have at most {MAX_HEADER_BYTES})")
    raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightFileError(f"{path}: not a readable safetensors file (header: {error})") from error
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    checksum = metadata.get("checksum") if isinstance(metadata, dict) else None
    field = f'"checksum":"{checksum}"'.encode()
    if not isinstance(checksum, str) or len(checksum) != 64 or raw.count(field) != 1:
        raise WeightFileError(f"{path}: no checksum in its metadata; re-export the weights with this version of "
                              "slimdrive")
    return header, length, 8 + raw.index(field) + len(field) - 65


def _file_digest(handle, at: int) -> str:
    """SHA-256 of the open file read from its start, with the 64 bytes at `at` (the checksum value) taken as "0"s."""
    handle.seek(0)
    digest = hashlib.sha256(handle.read(at))
    digest.update(_UNSEALED.encode())
    handle.seek(at + 64)
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def seal(path: str | Path) -> str:
    """Write the whole-file checksum of a file written with the checksum `_UNSEALED`; returns it. (Also what a
    test uses to make an altered file consistent again.)"""
    path = Path(path)
    with path.open("r+b") as handle:
        _, _, at = _header(path, handle)
        checksum = _file_digest(handle, at)
        handle.seek(at)
        handle.write(checksum.encode())
    return checksum


def _config_json(cfg: ModelConfig) -> str:
    return json.dumps({name: getattr(cfg, name) for name in cfg.__dataclass_fields__}, sort_keys=True)


def _write(tensors: dict[str, torch.Tensor], path: Path, file_format: FileFormat, cfg: ModelConfig) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous() for name, tensor in tensors.items()}
    metadata = {
        "format": file_format,
        "format_version": str(FORMAT_VERSION),
        "config": _config_json(cfg),
        "checksum": _UNSEALED,
    }
    # write next to the target and rename, so a crash never leaves a half-written weight file behind
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    seal(partial)
    partial.replace(path)
    return path


def packed_tensors(net: DrivingNet) -> dict[str, torch.Tensor]:
    """The tensors of the packed export of a ternary ``net`` (see the module docstring)."""
    if net.cfg.quant != "ternary":
        raise ValueError(f"packed export needs a ternary model, this one has quant={net.cfg.quant!r}")
    layers = set(ternary_layers(net))
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in net.state_dict().items():
        layer, _, leaf = name.rpartition(".")
        if layer in layers and leaf == "weight":
            codes, scale = weight_quant(tensor.float())
            tensors[f"{name}.codes"] = pack_ternary(codes)
            tensors[f"{name}.scale"] = (1.0 / scale).reshape(1).float()
        else:
            tensors[name] = tensor.float()
    return tensors


def export_packed(net: DrivingNet, path: str | Path) -> Path:
    """Write the packed ternary export of ``net`` to ``path`` (atomically) and return the path."""
    return _write(packed_tensors(net), Path(path), PACKED_FORMAT, net.cfg)


def save_checkpoint(net: DrivingNet, path: str | Path) -> Path:
    """Write ``net``'s float weights (latent weights for a ternary model) and config to ``path``."""
    return _write({name: t.float() for name, t in net.state_dict().items()}, Path(path), CHECKPOINT_FORMAT, net.cfg)


def _read(path: str | Path, expected_format: FileFormat) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Check the header and the whole file's checksum before reading any tensor or building any model, then the
    format, version and config; return config and tensors."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: no such weight file")
    try:
        with path.open("rb") as handle:
            header, length, at = _header(path, handle)
            metadata = header["__metadata__"]
            found_format = metadata.get("format")
            if found_format != expected_format:
                raise WeightFileError(f"{path}: format is {found_format!r}, expected {expected_format!r}")
            if metadata.get("format_version") != str(FORMAT_VERSION):
                raise WeightFileError(
                    f"{path}: format_version is {metadata.get('format_version')!r}, this code reads version "
                    f"{FORMAT_VERSION}; re-export the weights with this version of slimdrive"
                )
            ends = [entry.get("data_offsets", [0, 0])[1] for name, entry in header.items() if name != "__metadata__"]
            data_bytes = path.stat().st_size - 8 - length
            if max(ends, default=0) != data_bytes:
                raise WeightFileError(f"{path}: not a readable safetensors file (its header places tensors in "
                                      f"{max(ends, default=0)} bytes, the file holds {data_bytes}: truncated?)")
            if metadata["checksum"] != _file_digest(handle, at):
                raise WeightFileError(f"{path}: checksum mismatch: the file (its config, header or tensors) is corrupt "
                                      "or was modified after export; restore or re-export it")
    except (OSError, AttributeError, TypeError, IndexError) as error:  # unreadable, or a header of the wrong shape
        raise WeightFileError(f"{path}: not a readable safetensors file ({error})") from error
    try:
        cfg = ModelConfig.from_dict(json.loads(metadata.get("config", "")))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise WeightFileError(f"{path}: invalid model config in metadata ({error})") from error
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightFileError(f"{path}: not a readable safetensors file ({error})") from error
    return cfg, tensors


def _check_tensors(path: Path | str, found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise WeightFileError(f"{path}: tensors do not match the config: missing {missing}, unexpected {unexpected}")
    for name, reference in expected.items():
        tensor = found[name]
        if tensor.shape != reference.shape or tensor.dtype != reference.dtype:
            raise WeightFileError(
                f"{path}: tensor {name} is {tensor.dtype} {tuple(tensor.shape)}, "
                f"expected {reference.dtype} {tuple(reference.shape)}"
            )


def load_checkpoint(path: str | Path) -> DrivingNet:
    """Load a float training checkpoint written by `save_checkpoint` (training graph, eval mode)."""
    cfg, tensors = _read(path, CHECKPOINT_FORMAT)
    net = DrivingNet(cfg)
    _check_tensors(path, tensors, {name: t.float() for name, t in net.state_dict().items()})
    net.load_state_dict(tensors)
    return net.eval()


def load_packed(path: str | Path) -> DrivingNet:
    """Load a packed export as a `DrivingNet` on the packed ternary runtime (see `agent.runtime`)."""
    from agent.runtime import to_runtime

    cfg, tensors = _read(path, PACKED_FORMAT)
    if cfg.quant != "ternary":
        raise WeightFileError(f"{path}: packed export with quant={cfg.quant!r}; only ternary models are packed")
    net = DrivingNet(cfg)
    _check_tensors(path, tensors, packed_tensors(net))
    packed: dict[str, tuple[torch.Tensor, float]] = {}
    for layer in ternary_layers(net):
        module: BitLinear = net.get_submodule(layer)
        codes = tensors.pop(f"{layer}.weight.codes")
        try:
            unpack_ternary(codes, tuple(module.weight.shape))  # validates: no code 3 anywhere
        except ValueError as error:
            raise WeightFileError(f"{path}: tensor {layer}.weight.codes: {error}") from error
        scale = float(tensors.pop(f"{layer}.weight.scale"))
        packed[layer] = (codes.view(module.out_features, module.in_features // 4), scale)
    net.load_state_dict(tensors, strict=False)  # everything but the (now packed) BitLinear weights
    return to_runtime(net, packed)


def file_format(path: str | Path) -> str:
    """The ``format`` a weight file declares (``slimdrive-ternary`` or ``slimdrive-checkpoint``), unvalidated."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format", "")
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightFileError(f"{path}: not a readable safetensors file ({error})") from error
