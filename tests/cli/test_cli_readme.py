"""The README's one-step-at-a-time commands and `byoc --help`'s examples are commands `byoc` takes, on
files that exist after `make pipeline` and the steps before them (issue 25: `byoc deploy --url` was
documented and ignored, the examples invoked a `shirt.png` nobody had)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from byoc.cli import MAIN_EPILOG, build_parser, command_parser
from byoc.datasets.fashion_mnist import CLASS_NAMES, folder_name

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_cli_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## The `byoc` CLI"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.startswith("byoc ")]


def epilog_local_commands() -> list[str]:
    block = MAIN_EPILOG[MAIN_EPILOG.index("one step at a time"):MAIN_EPILOG.index("on SageMaker")]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("byoc ")]


def argv_of(line: str) -> list[str]:
    argv = shlex.split(line, comments=True)
    assert argv[0] == "byoc"
    return [a for a in argv[1:] if a != "&"]


@pytest.mark.parametrize("source", ["README", "byoc --help"])
def test_every_step_parses_with_no_unknown_flag(source):
    lines = readme_cli_commands() if source == "README" else epilog_local_commands()
    assert len(lines) >= 10
    parser = build_parser()
    for line in lines:
        args, unknown = parser.parse_known_args(argv_of(line))
        assert not unknown, (line, unknown)
        assert command_parser(parser, args.command) is not None


@pytest.mark.parametrize("source", ["README", "byoc --help"])
def test_every_step_reads_what_an_earlier_step_wrote(source):
    """Each path a step reads is data/demo's (`byoc data`'s Fashion-MNIST export) or an earlier
    step's output."""
    lines = readme_cli_commands() if source == "README" else epilog_local_commands()
    parser = build_parser()
    written: set[str] = set()
    demo_classes = {folder_name(i, name) for i, name in enumerate(CLASS_NAMES)}
    for line in lines:
        args = parser.parse_known_args(argv_of(line))[0]
        reads = [getattr(args, k) for k in ("data", "from_tuning", "job_dir", "model_dir", "artifact", "image",
                                            "input") if isinstance(getattr(args, k, None), str)]
        if args.command in ("train",):
            reads.remove(args.job_dir)          # train writes its job dir
        for path in reads:
            if path.startswith("data/demo/"):
                parts = Path(path).parts        # data/demo/<split>/<class>[/<file>]
                assert parts[2] in ("train", "valid", "test") and parts[3] in demo_classes, (line, path)
            else:
                assert any(path == w or path.startswith(w + "/") for w in written), (line, path, written)
        for key in ("dest", "out", "job_dir", "output"):
            if isinstance(getattr(args, key, None), str):
                written.add(getattr(args, key))
