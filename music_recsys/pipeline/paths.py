"""Where a run may read and write: the data root, the allowed input roots, run directories.

Every path a user can pass must resolve inside ``RECSYS_DATA_ROOT`` or one of the colon-separated roots
in ``RECSYS_INPUT_ROOTS``; the DAG checks here (through ``RunConfig.validate``) before any Spark job
starts, so a param cannot make a job read outside the data it is meant to see.
"""

from __future__ import annotations

import re
from pathlib import Path

from music_recsys import settings
from music_recsys.pipeline.params import ParamError
from music_recsys.settings import data_root


def input_roots() -> list[Path]:
    """Roots that input paths may lie under: the data root plus ``RECSYS_INPUT_ROOTS``."""
    roots = [data_root()]
    for raw in settings.text("RECSYS_INPUT_ROOTS").split(":"):
        if raw.strip():
            roots.append(Path(raw.strip()).expanduser().resolve())
    return roots


def resolve_input_path(path: str, *, name: str = "path") -> Path:
    """Resolve a user-given input path and refuse anything outside the allowed roots.

    Relative paths are taken from the data root. Symlinks and ``..`` are resolved before the
    check, so neither can escape a root. URI schemes are refused: inputs are local or mounted paths.
    """
    if not isinstance(path, str) or not path.strip():
        raise ParamError(f"{name}: must be a non-empty path string, got {path!r}")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise ParamError(
            f"{name}: {path!r} is a URI; only local paths are accepted. "
            f"Allowed roots: {', '.join(map(str, input_roots()))}"
        )
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = data_root() / candidate
    resolved = candidate.resolve()
    roots = input_roots()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        raise ParamError(
            f"{name}: {path!r} resolves to {resolved}, which is outside the allowed roots "
            f"({', '.join(map(str, roots))}). Move the data under RECSYS_DATA_ROOT or add its "
            f"directory to RECSYS_INPUT_ROOTS (colon-separated)."
        )
    return resolved
