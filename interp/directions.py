"""Named directions in a model's residual stream: :class:`DirectionSet`.

A direction set is ``n`` named vectors of width ``d_model`` (float32) plus where they came from: the
layer they were read at (``None`` when they are not tied to one), a free-text ``source`` and a
JSON-serialisable ``metadata`` dict (explained variance of principal components, a random seed...).
Every analysis in interp that takes "directions" accepts one (or a plain ``[n, d_model]`` tensor).

Files: ``.safetensors`` (the vectors as one tensor, names and metadata as JSON in the header) and
``.pt`` files read only with ``torch.load(weights_only=True)``; pickled objects are never loaded.
"""

from __future__ import annotations

import copy
import json
import operator
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import einops
import pandas as pd
import torch
from jaxtyping import Float

from interp._validate import as_directions

__all__ = ["DirectionSet"]

_FORMAT = "interp.DirectionSet"
_FORMAT_VERSION = "1"
_SUFFIXES = (".safetensors", ".pt", ".pth")


@dataclass(frozen=True, eq=False)
class DirectionSet:
    """Named vectors in residual space, with the layer and recipe they came from.

    ``vectors[i]`` is the direction called ``names[i]``. Construction validates the fields (unique
    non-empty names, one per row, finite values) and stores a float32 copy of ``vectors``. Methods
    return new sets; nothing is modified in place.

    Example::

        pcs = DirectionSet.from_pca(acts, 5, layer=15)          # PC1..PC5, unit, sorted
        probes = pcs.with_negations().concat(DirectionSet.random(20, pcs.d_model, seed=42))
        probes["-PC1"]                                          # a [d_model] tensor
    """

    names: tuple[str, ...]
    vectors: Float[torch.Tensor, "n d_model"]
    layer: int | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.names, str) or not isinstance(self.names, Sequence):
            raise TypeError(f"names: expected a sequence of strings, got {type(self.names).__name__}")
        names = tuple(self.names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"names: every name must be a non-empty string, got {name!r}")
        seen: set[str] = set()
        duplicates = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
        if duplicates:
            raise ValueError(f"names: must be unique, duplicated: {duplicates[:10]}")
        vectors = _as_matrix(self.vectors, "vectors", "[n, d_model]")
        vectors = as_directions(vectors, vectors.shape[1], name="vectors", allow_zero=True).clone().contiguous()
        if vectors.shape[0] != len(names):
            raise ValueError(f"names: {len(names)} names for {vectors.shape[0]} rows of vectors (need one per row)")
        if self.layer is not None and (not isinstance(self.layer, int) or isinstance(self.layer, bool)):
            raise TypeError(f"layer: expected an int or None, got {self.layer!r}")
        if not isinstance(self.source, str):
            raise TypeError(f"source: expected a string, got {type(self.source).__name__}")
        if not isinstance(self.metadata, Mapping):
            raise TypeError(f"metadata: expected a dict, got {type(self.metadata).__name__}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "metadata", copy.deepcopy(dict(self.metadata)))

    # ------------------------------------------------------------------ container protocol
    @property
    def d_model(self) -> int:
        """Width of the vectors."""
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[str, Float[torch.Tensor, " d_model"]]]:
        """Pairs ``(name, vector)`` in row order."""
        return iter(zip(self.names, self.vectors, strict=True))

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, key: str | int) -> Float[torch.Tensor, " d_model"]:
        """The vector called ``key`` (a name) or in row ``key`` (an int, negative counts from the end)."""
        if isinstance(key, str):
            try:
                return self.vectors[self.names.index(key)]
            except ValueError:
                raise KeyError(f"no direction named {key!r}; names: {_preview(self.names)}") from None
        if not isinstance(key, bool):
            try:
                key = operator.index(key)  # ints, numpy ints, 0-d integer tensors
            except TypeError:
                pass
        if isinstance(key, int) and not isinstance(key, bool):
            if not -len(self) <= key < len(self):
                raise IndexError(f"row {key} is out of range for a DirectionSet of {len(self)} directions")
            return self.vectors[key]
        raise TypeError(f"DirectionSet indices are names (str) or rows (int), got {type(key).__name__}")

    def __repr__(self) -> str:
        layer = "" if self.layer is None else f", layer={self.layer}"
        return f"DirectionSet({len(self)} x {self.d_model}{layer}, names={_preview(self.names)}, source={self.source!r})"

    def index(self, name: str) -> int:
        """Row of the direction called ``name``."""
        return self.names.index(name)

    # ------------------------------------------------------------------ derived sets
    def _replace(self, names: Sequence[str], vectors: torch.Tensor, **changes: Any) -> DirectionSet:
        fields = {"layer": self.layer, "source": self.source, "metadata": self.metadata, **changes}
        return DirectionSet(tuple(names), vectors, **fields)

    def subset(self, names: Sequence[str] | str) -> DirectionSet:
        """The directions called ``names``, in the order given."""
        if isinstance(names, str):
            names = [names]
        names = list(names)
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"names: unknown directions {missing[:10]}; available: {_preview(self.names)}")
        if not names:
            raise ValueError("names: is empty (expected at least one direction name)")
        rows = torch.tensor([self.names.index(n) for n in names], dtype=torch.long)
        return self._replace(names, self.vectors[rows])

    def unit(self) -> DirectionSet:
        """Every vector divided by its Euclidean norm, ``v / ||v||``; a zero vector is a ValueError."""
        norms = self.vectors.norm(dim=1)
        zero = torch.nonzero(norms == 0).flatten().tolist()
        if zero:
            raise ValueError(
                f"vectors: cannot unit-normalise zero vectors: {[self.names[i] for i in zero][:10]}"
            )
        return self._replace(self.names, self.vectors / norms[:, None])

    def with_negations(self) -> DirectionSet:
        """Each direction followed by its negation: rows ``v1, -v1, v2, -v2, ...`` named ``NAME`` / ``-NAME``.

        The negation of a name that already starts with ``-`` drops the sign (``-X`` -> ``X``).
        """
        names = [n for name in self.names for n in (name, _negated(name))]
        vectors = einops.rearrange(
            torch.stack([self.vectors, -self.vectors]), "sign n d -> (n sign) d"
        )
        return self._replace(names, vectors)

    def concat(self, other: DirectionSet) -> DirectionSet:
        """Rows of ``self`` then rows of ``other`` (same ``d_model``, names unique across both).

        ``layer`` is kept when both agree (else ``None``); the parts' sources and metadata are kept
        under ``metadata["parts"]``, since per-row metadata of a part no longer describes the whole.
        """
        if not isinstance(other, DirectionSet):
            raise TypeError(f"other: expected a DirectionSet, got {type(other).__name__}")
        if other.d_model != self.d_model:
            raise ValueError(
                f"other: has d_model {other.d_model} but this DirectionSet has d_model {self.d_model}"
            )
        clash = sorted(set(self.names) & set(other.names))
        if clash:
            raise ValueError(f"other: names {clash[:10]} are already in this DirectionSet (names must be unique)")
        parts = [
            {"names": list(part.names), "layer": part.layer, "source": part.source, "metadata": part.metadata}
            for part in (self, other)
        ]
        sources = [s for s in dict.fromkeys((self.source, other.source)) if s]
        return DirectionSet(
            self.names + other.names,
            torch.cat([self.vectors, other.vectors]),
            layer=self.layer if self.layer == other.layer else None,
            source=" + ".join(sources),
            metadata={"parts": parts},
        )

    def to_dataframe(self) -> pd.DataFrame:
        """One row per direction: ``index``, ``name``, ``norm``, ``layer``, ``source``."""
        return pd.DataFrame(
            {
                "index": range(len(self)),
                "name": list(self.names),
                "norm": self.vectors.norm(dim=1).tolist(),
                "layer": [self.layer] * len(self),
                "source": [self.source] * len(self),
            }
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_dict(
        cls,
        vectors: Mapping[str, torch.Tensor],
        *,
        layer: int | None = None,
        source: str = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> DirectionSet:
        """A set from ``{name: vector}`` (1-D vectors of one width), rows in the mapping's order."""
        if not isinstance(vectors, Mapping):
            raise TypeError(f"vectors: expected a mapping of name -> tensor, got {type(vectors).__name__}")
        if not vectors:
            raise ValueError("vectors: is empty (expected at least one direction)")
        rows = []
        for name, value in vectors.items():
            row = torch.as_tensor(value) if not isinstance(value, torch.Tensor) else value
            if row.ndim != 1:
                raise ValueError(f"vectors: entry {name!r} has shape {tuple(row.shape)}, expected one 1-D vector")
            rows.append(row.detach().to(torch.float32))
        widths = sorted({int(r.shape[0]) for r in rows})
        if len(widths) > 1:
            raise ValueError(f"vectors: entries have different widths {widths}; all must share one d_model")
        return cls(tuple(vectors), torch.stack(rows), layer=layer, source=source, metadata=dict(metadata or {}))

    @classmethod
    def random(cls, n: int, d_model: int, *, seed: int = 0, prefix: str = "Random") -> DirectionSet:
        """``n`` isotropic random unit vectors ``g / ||g||``, ``g ~ N(0, I)``, named ``{prefix}1..{prefix}n``.

        Drawn with ``torch.randn(n, d_model, generator=torch.Generator().manual_seed(seed))`` on the
        CPU, so the same ``(n, d_model, seed)`` gives the same vectors in every run (for a given torch version). (The
        seed notebooks used ``torch.manual_seed(42)`` then one ``torch.randn(d_model)`` per vector; for a
        ``d_model`` that is a multiple of 16, as in every model here, that gives the same rows as
        ``seed=42`` here.)
        """
        for arg, value in (("n", n), ("d_model", d_model), ("seed", seed)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{arg}: expected an int, got {value!r}")
        if n < 1:
            raise ValueError(f"n: expected at least 1 direction, got {n}")
        if d_model < 1:
            raise ValueError(f"d_model: expected a positive width, got {d_model}")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        draws = torch.randn(n, d_model, generator=generator, dtype=torch.float32)
        return cls(
            tuple(f"{prefix}{i + 1}" for i in range(n)),
            draws / draws.norm(dim=1, keepdim=True),
            source=f"random isotropic unit vectors (seed {seed})",
            metadata={"seed": seed, "distribution": "normal(0, I), unit-normalised"},
        )

    @classmethod
    def from_pca(
        cls,
        activations: Float[torch.Tensor, "n_samples d_model"],
        n_components: int,
        *,
        prefix: str = "PC",
        layer: int | None = None,
        source: str = "",
    ) -> DirectionSet:
        """The top principal axes of ``activations`` as unit vectors ``{prefix}1..{prefix}k``.

        With ``X`` the mean-centred samples and ``X = U S V^T`` its thin SVD, component ``i`` is row
        ``V^T[i]``, and ``metadata["explained_variance_ratio"][i] = S_i^2 / sum_j S_j^2`` (the share of
        total variance; ``metadata["explained_variance"]`` is ``S_i^2 / (n_samples - 1)``). Sign
        convention: each component is flipped so that its entry of largest absolute value is positive
        (the first such entry on ties), so results do not depend on the SVD backend. Computed in
        float64. ``n_components`` may be at most ``min(n_samples - 1, d_model)``, the rank of ``X``.
        """
        if isinstance(activations, DirectionSet):
            activations = activations.vectors
        samples = _as_matrix(activations, "activations", "[n_samples, d_model]")
        samples = as_directions(samples, samples.shape[1], name="activations", allow_zero=True).double()
        n_samples, d_model = samples.shape
        if not isinstance(n_components, int) or isinstance(n_components, bool):
            raise TypeError(f"n_components: expected an int, got {n_components!r}")
        max_k = min(n_samples - 1, d_model)
        if n_samples < 2:
            raise ValueError(f"activations: PCA needs at least 2 samples, got {n_samples}")
        if not 1 <= n_components <= max_k:
            raise ValueError(
                f"n_components: must be between 1 and min(n_samples - 1, d_model) = {max_k}, got {n_components}"
            )
        mean = samples.mean(dim=0, keepdim=True)
        _u, singular, vh = torch.linalg.svd(samples - mean, full_matrices=False)
        total = float((singular**2).sum())
        if total == 0.0:
            raise ValueError("activations: all samples are identical, so there is no variance to decompose")
        components = vh[:n_components]
        peak = components.abs().argmax(dim=1)
        signs = torch.sign(components.gather(1, peak[:, None]))
        components = components * signs
        variance = singular[:n_components] ** 2
        return cls(
            tuple(f"{prefix}{i + 1}" for i in range(n_components)),
            components.to(torch.float32),
            layer=layer,
            source=source or f"PCA of {n_samples} samples",
            metadata={
                "explained_variance_ratio": (variance / total).tolist(),
                "explained_variance": (variance / (n_samples - 1)).tolist(),
                "singular_values": singular[:n_components].tolist(),
                "n_samples": n_samples,
                "sign_convention": "largest-|entry| of each component is positive",
            },
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write to ``path``: ``.safetensors`` (tensor ``vectors``; names, layer, source, metadata as
        JSON strings in the header) or ``.pt``/``.pth`` (a plain dict of tensors, strings, numbers and
        lists, readable with ``torch.load(weights_only=True)``). Returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in _SUFFIXES:
            raise ValueError(f"path: {str(path)!r} must end in one of {', '.join(_SUFFIXES)}")
        try:
            metadata_json = json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata: must be JSON-serialisable (plain numbers, strings, lists, dicts) to save: {exc}") from exc
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".safetensors":
            from safetensors.torch import save_file

            header = {
                "format": _FORMAT,
                "format_version": _FORMAT_VERSION,
                "names": json.dumps(list(self.names)),
                "layer": json.dumps(self.layer),
                "source": self.source,
                "metadata": metadata_json,
            }
            save_file({"vectors": self.vectors.contiguous()}, str(path), metadata=header)
        else:
            torch.save(
                {
                    "format": _FORMAT,
                    "format_version": _FORMAT_VERSION,
                    "names": list(self.names),
                    "vectors": self.vectors.contiguous(),
                    "layer": self.layer,
                    "source": self.source,
                    "metadata": json.loads(metadata_json),
                },
                path,
            )
        return path

    @classmethod
    def load(cls, path: str | Path, *, names: Sequence[str] | None = None) -> DirectionSet:
        """Read a DirectionSet from a ``.safetensors`` or ``.pt``/``.pth`` file, never unpickling objects.

        Accepted contents: a file written by :meth:`save`; a file of named 1-D tensors (one direction
        each; rows in the file's key order); or a single 2-D tensor, whose rows are named by ``names``
        (default ``"0", "1", ...``). ``.pt`` files are read only with ``torch.load(weights_only=True)``:
        files holding arbitrary pickled objects are refused with a ValueError.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"path: no DirectionSet file at {str(path)!r}")
        if not path.is_file():
            raise ValueError(f"path: {str(path)!r} is not a file")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            tensors, header = _read_safetensors(path)
        elif suffix in (".pt", ".pth"):
            tensors, header = _read_torch(path)
        else:
            raise ValueError(
                f"path: {str(path)!r} has an unsupported suffix {path.suffix!r}; expected one of {', '.join(_SUFFIXES)}"
            )
        try:
            return _from_contents(tensors, header, names=names, path=path)
        except (TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"path: {str(path)!r} does not hold a valid DirectionSet: {exc}") from exc


# ---------------------------------------------------------------------- helpers
def _as_matrix(x: object, name: str, shape: str) -> torch.Tensor:
    """``x`` as a 2-D tensor with at least one column, or a TypeError/ValueError naming ``name``."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except Exception as exc:
            raise TypeError(f"{name}: expected a tensor of shape {shape}, got {type(x).__name__}") from exc
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(x.shape)}")
    if x.shape[1] == 0:
        raise ValueError(f"{name}: has width 0 (expected shape {shape} with d_model >= 1)")
    return x


def _negated(name: str) -> str:
    return name[1:] if name.startswith("-") else f"-{name}"


def _preview(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return f"[{shown}{', ...' if len(names) > limit else ''}] ({len(names)})"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError variants
        raise ValueError(f"path: {str(path)!r} is not a readable safetensors file: {exc}") from exc
    if header.get("format") == _FORMAT:
        decoded: dict[str, Any] = {
            "names": json.loads(header.get("names", "null")),
            "layer": json.loads(header.get("layer", "null")),
            "source": header.get("source", ""),
            "metadata": json.loads(header.get("metadata", "{}")),
        }
        return tensors, decoded
    return tensors, {}


def _weights_only_reason(message: str) -> str:
    """The specific line of torch's long weights_only error (e.g. "Unsupported global: ...")."""
    boilerplate = ("Weights only load failed", "Check the documentation", "Please file an issue")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(boilerplate)]
    return specific[0] if specific else (lines[0] if lines else "unknown error")


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _weights_only_reason(str(exc))
        if "global" in reason.lower():
            raise ValueError(
                f"path: {str(path)!r} holds pickled objects that a safe load (torch.load weights_only=True) "
                f"refuses ({reason}); interp never unpickles arbitrary objects: save the directions as "
                "tensors (DirectionSet.save) instead"
            ) from exc
        raise ValueError(
            f"path: {str(path)!r} is not a readable torch file (torch.load weights_only=True failed: {reason})"
        ) from exc
    except Exception as exc:  # truncated/corrupt archives raise RuntimeError, EOFError, zipfile errors...
        raise ValueError(f"path: {str(path)!r} is not a readable torch file: {exc}") from exc
    if isinstance(obj, torch.Tensor):
        return {"vectors": obj}, {}
    if not isinstance(obj, Mapping):
        raise ValueError(f"path: {str(path)!r} holds a {type(obj).__name__}, expected a dict or a tensor")
    if obj.get("format") == _FORMAT or ("vectors" in obj and "names" in obj):
        header = {key: obj.get(key) for key in ("names", "layer", "source", "metadata") if key in obj}
        return {"vectors": obj["vectors"]}, header
    return dict(obj), {}


def _from_contents(
    tensors: Mapping[str, Any], header: Mapping[str, Any], *, names: Sequence[str] | None, path: Path
) -> DirectionSet:
    layer = header.get("layer")
    source = header.get("source") or f"loaded from {path.name}"
    metadata = header.get("metadata") or {}
    if "names" in header and header["names"] is not None:
        if "vectors" not in tensors:
            raise ValueError("it names its directions but has no 'vectors' tensor")
        return DirectionSet(tuple(header["names"]), tensors["vectors"], layer=layer, source=source, metadata=metadata)
    non_tensors = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise ValueError(f"entries {non_tensors[:10]} are not tensors")
    if len(tensors) == 1 and next(iter(tensors.values())).ndim == 2:
        matrix = next(iter(tensors.values()))
        row_names = tuple(names) if names is not None else tuple(str(i) for i in range(matrix.shape[0]))
        return DirectionSet(row_names, matrix, layer=layer, source=source, metadata=metadata)
    if names is not None:
        raise ValueError("names: only applies to a file holding a single 2-D tensor")
    return DirectionSet.from_dict(dict(tensors), layer=layer, source=source, metadata=metadata)

