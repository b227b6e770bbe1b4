"""Run a CodeBuild buildspec (version 0.2) on this machine the way CodeBuild's agent runs it.

What is reproduced (AWS CodeBuild user guide, "Build specification reference" and "Build phase
transitions"):

* ``env.variables`` are defaults: the build's own environment (start-build overrides, project
  settings; here the ``env`` argument) wins over the buildspec's values;
* ``env.shell`` (bash) runs every command, all of them in one shell instance, so variables set in
  one command or phase are seen by the next (version 0.2);
* phases run in order install, pre_build, build, post_build; a command that exits non-zero fails
  its phase and skips its remaining commands; a failed install or pre_build skips the rest of the
  build, a failed build still runs post_build with ``CODEBUILD_BUILD_SUCCEEDING=0``;
* ``artifacts.files`` must exist in the source directory when the build ends.

The commands are the buildspec's own text, unchanged: nothing is parsed out of them or stubbed.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

PHASES = ("install", "pre_build", "build", "post_build")


@dataclass
class BuildResult:
    succeeded: bool
    failed_phase: str | None
    log: str
    artifacts: dict[str, Path]       # artifacts.files -> path in the source directory (existing only)


def _script(spec: dict, command_dir: Path) -> str:
    """One bash script for the whole build; each command is its own file, ``source``d in the build
    shell (so its variables stay, and its status is its last line's, as in CodeBuild)."""
    lines = ["CODEBUILD_BUILD_SUCCEEDING=1", "__byoc_failed_phase="]
    for phase in PHASES:
        commands = (spec.get("phases", {}).get(phase) or {}).get("commands", [])
        # post_build runs after a failed build; nothing runs after a failed install or pre_build.
        gate = ('[ "$__byoc_failed_phase" != install ] && [ "$__byoc_failed_phase" != pre_build ]'
                if phase == "post_build" else '[ -z "$__byoc_failed_phase" ]')
        lines += [f"echo '[buildspec] entering phase {phase}'",
                  f"if {gate}; then __byoc_phase_ok=1; else __byoc_phase_ok=0; fi"]
        for i, command in enumerate(commands):
            path = command_dir / f"{phase}-{i + 1}.sh"
            path.write_text(command + "\n")
            lines += ['if [ "$__byoc_phase_ok" = 1 ]; then',
                      f"  . '{path}'",
                      '  __byoc_rc=$?',
                      '  if [ "$__byoc_rc" != 0 ]; then',
                      f'    echo "[buildspec] phase {phase} command {i + 1} exited $__byoc_rc" >&2',
                      f"    __byoc_phase_ok=0; __byoc_failed_phase=${{__byoc_failed_phase:-{phase}}}",
                      "    CODEBUILD_BUILD_SUCCEEDING=0",
                      "  fi",
                      "fi"]
    lines += ['echo "[buildspec] failed phase: ${__byoc_failed_phase:-none}"',
              '[ -z "$__byoc_failed_phase" ]']
    return "\n".join(lines) + "\n"


def run_buildspec(buildspec: Path, src_dir: Path, env: dict[str, str], timeout: float) -> BuildResult:
    """Run ``buildspec`` in ``src_dir`` with ``env`` as the build environment (see the module doc)."""
    spec = yaml.safe_load(Path(buildspec).read_text())
    assert str(spec["version"]) == "0.2", "only buildspec version 0.2 is reproduced"
    shell = spec.get("env", {}).get("shell", "bash")
    assert shell == "bash", f"only the bash shell is reproduced, not {shell!r}"
    variables = {k: "" if v is None else str(v) for k, v in spec.get("env", {}).get("variables", {}).items()}
    full_env = {**variables, **env, "CODEBUILD_SRC_DIR": str(src_dir)}
    with tempfile.TemporaryDirectory(prefix="buildspec-") as command_dir:
        proc = subprocess.run(["bash", "-c", _script(spec, Path(command_dir))], cwd=src_dir, env=full_env,
                              capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    failed = next((line.rsplit(": ", 1)[1] for line in proc.stdout.splitlines()
                   if line.startswith("[buildspec] failed phase: ")), "runner")
    artifacts = {name: src_dir / name for name in spec.get("artifacts", {}).get("files", [])
                 if (src_dir / name).is_file()}
    return BuildResult(succeeded=proc.returncode == 0, failed_phase=None if failed == "none" else failed,
                       log=log, artifacts=artifacts)


def copy_source(repo_root: Path, dest: Path) -> Path:
    """What CodeBuild checks out: the repository's files (tracked and untracked, not git-ignored)."""
    listed = subprocess.run(["git", "-C", str(repo_root), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        src = repo_root / rel
        if src.is_file() and not src.is_symlink():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(src.read_bytes())
            os.chmod(target, src.stat().st_mode & 0o777)
    return dest
