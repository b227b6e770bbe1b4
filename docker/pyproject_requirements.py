"""Print the pip requirements of one pyproject.toml optional group, one per line.

The Dockerfiles install their dependencies from pyproject.toml (the single place where they are
listed) through this script, so no requirement list is copied into a Dockerfile. Self-references
such as ``sagemaker-byoc-resnet[model]`` are expanded recursively.

    python pyproject_requirements.py pyproject.toml model               # torch, torchvision, ...
    python pyproject_requirements.py pyproject.toml train --minus model # what train adds to model

Standard library only (runs in the bare base image before anything is installed).
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(requirement: str) -> tuple[str, list[str]]:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return _normalize(match.group(1)), extras


def group_requirements(pyproject: dict, group: str) -> list[str]:
    """The requirements of ``group`` with self-references expanded, in order, without duplicates."""
    project = pyproject["project"]
    groups = project.get("optional-dependencies", {})
    own_name = _normalize(project["name"])
    result: list[str] = []
    seen_groups: set[str] = set()

    def visit(name: str) -> None:
        if name not in groups:
            raise KeyError(f"pyproject.toml has no optional-dependencies group {name!r}; "
                           f"known groups: {', '.join(sorted(groups))}")
        if name in seen_groups:
            return
        seen_groups.add(name)
        for requirement in groups[name]:
            req_name, extras = _split(requirement)
            if req_name == own_name:
                for extra in extras:
                    visit(extra)
            elif requirement not in result:
                result.append(requirement)

    visit(group)
    return result


def without(requirements: list[str], dropped: list[str]) -> list[str]:
    """``requirements`` less every package named in ``dropped`` (compared by normalized name)."""
    dropped_names = {_split(r)[0] for r in dropped}
    return [r for r in requirements if _split(r)[0] not in dropped_names]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("group")
    parser.add_argument("--minus", metavar="GROUP", help="leave out the packages of this group")
    args = parser.parse_args(argv)

    pyproject = tomllib.loads(args.pyproject.read_text())
    try:
        requirements = group_requirements(pyproject, args.group)
        if args.minus:
            requirements = without(requirements, group_requirements(pyproject, args.minus))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    if not requirements:
        print(f"no requirements selected from group {args.group!r}", file=sys.stderr)
        return 1
    print("\n".join(requirements))
    return 0


if __name__ == "__main__":
    sys.exit(main())
