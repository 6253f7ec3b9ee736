"""The whole candidate library: the weight- and activation-derived recipes, the compound hypotheses
built from them, and the names every other basis of a sweep carries (control and ceilings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from interp.subspace.activation_library import ACTIVATION_BASES
from interp.subspace.basis import Basis, intersection, project_away, union
from interp.subspace.weight_library import WEIGHT_BASES

# compound name -> (the two library bases it combines, how); a compound is built whenever both are
COMPOUND_BASES: Mapping[str, tuple[str, str, Callable[..., Basis]]] = {
    "WNR_union_persona_contrast": ("write_not_downstream_read", "persona_contrast", union),
    "qk_x_chars_clusters": ("qk_circuit", "chars_clusters", intersection),
    "persona_contrast_not_clean_pca": ("persona_contrast", "layer_clean_resid_pca", project_away),
}
CONTROL_BASES = ("random", "act_ceiling", "weight_ceiling")  # always in a sweep; not selectable


def library_names() -> tuple[str, ...]:
    """Every basis name ``include`` may select: the weight and activation bases, in table order."""
    return (*WEIGHT_BASES, *ACTIVATION_BASES)


def check_include(include: Sequence[str] | None) -> None:
    """ValueError naming the unknown entries of ``include`` and listing the known basis names."""
    if include is None:
        return
    if isinstance(include, str):
        raise TypeError(f"include: expected a sequence of basis names, got the string {include!r}")
    known = library_names()
    unknown = [name for name in include if name not in known]
    if unknown:
        hints = [f"{n} is built when {COMPOUND_BASES[n][0]} and {COMPOUND_BASES[n][1]} are included"
                 for n in unknown if n in COMPOUND_BASES]
        raise ValueError(
            f"include: unknown bases {unknown}" + (f" ({'; '.join(hints)})" if hints else "")
            + f"; known bases are {list(known)}"
        )


def compound_bases(by_name: Mapping[str, Basis], k: int = 8) -> list[Basis]:
    """The compound hypotheses of :data:`COMPOUND_BASES` whose two parts are in ``by_name``."""
    out = []
    for name, (a, b, how) in COMPOUND_BASES.items():
        if a in by_name and b in by_name:
            extra = {"k": k} if how is intersection else {}
            out.append(how(by_name[a], by_name[b], name=name, **extra))
    return out
