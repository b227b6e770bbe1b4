"""Every subcommand's --help works and teaches (description + examples)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from byoc.cli import build_parser, main

SUBCOMMANDS = ("data", "tune", "train", "report", "package", "serve", "deploy", "invoke", "batch", "explain",
               "pipeline", "cleanup")


def test_main_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert f"\n    {cmd} " in out, cmd
    assert "byoc pipeline" in out and "--backend sagemaker" in out


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"byoc {cmd}" in out
    assert "--backend" in out and "--dry-run" in out   # common options reach every subcommand


def test_parser_covers_the_documented_subcommands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(SUBCOMMANDS)


def test_console_script_is_installed():
    byoc = Path(sys.executable).with_name("byoc")
    assert byoc.exists(), "reinstall the project (pip install -e .) to get the byoc console script"
    out = subprocess.run([str(byoc), "invoke", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--target-model" in out.stdout


def test_missing_required_argument_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["deploy", "model.tar.gz"])
    assert e.value.code == 2
    assert "--name" in capsys.readouterr().err
