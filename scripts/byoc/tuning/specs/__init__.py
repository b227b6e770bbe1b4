"""The built-in tuning specs, shipped with the package so an installed ``byoc tune`` finds them anywhere.

* ``tuning.yaml`` (:data:`DEFAULT_SPEC`): the project's search, a 2 x 2 x 2 grid on ResNet50; the
  default of ``byoc tune`` and of SageMaker tuning jobs.
* ``local-demo.yaml`` (:data:`DEMO_SPEC`): a small search that finishes in minutes on a laptop CPU;
  the pipeline's tuning step.

:func:`byoc.tuning.spec.load_spec` accepts their names (``tuning``, ``local-demo``, with or without
``.yaml``) as well as a path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SPECS_DIR = Path(str(resources.files(__name__)))
SUFFIX = ".yaml"
DEFAULT_SPEC = SPECS_DIR / f"tuning{SUFFIX}"
DEMO_SPEC = SPECS_DIR / f"local-demo{SUFFIX}"


def builtin_names() -> list[str]:
    """The names of the packaged specs (file names without ``.yaml``)."""
    return sorted(p.stem for p in SPECS_DIR.glob(f"*{SUFFIX}"))


def builtin_spec(name: str) -> Path | None:
    """The packaged spec called ``name`` (``local-demo`` or ``local-demo.yaml``), or None."""
    stem = name.removesuffix(SUFFIX)
    return SPECS_DIR / f"{stem}{SUFFIX}" if stem in builtin_names() else None
