"""Settings: defaults < byoc.yaml < BYOC_* environment < flags, with clear errors."""

from __future__ import annotations

import pytest

from byoc.cli import main
from byoc.settings import ConfigError, load_settings


def test_precedence(tmp_path):
    cfg = tmp_path / "byoc.yaml"
    cfg.write_text("backend: sagemaker\nregion: eu-west-1\nbucket: from-file\nprefix: p\n")
    s = load_settings(str(cfg), overrides={"bucket": "from-flag", "region": None},
                      environ={"BYOC_PREFIX": "from-env"})
    assert (s.backend, s.region, s.bucket, s.prefix) == ("sagemaker", "eu-west-1", "from-flag", "from-env")
    assert s.s3_run_prefix == "s3://from-flag/from-env/pipeline/"


def test_default_config_file_in_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "byoc.yaml").write_text("run-dir: runs/x\nport: '9000'\ncontainers: 'yes'\n")
    s = load_settings(environ={})
    assert (s.run_dir, s.port, s.containers, s.run_name) == ("runs/x", 9000, True, "x")


@pytest.mark.parametrize("text, message", [
    ("regoin: eu-west-1\n", "unknown setting"),
    ("- a list\n", "mapping"),
    ("backend: azure\n", "backend must be"),
    ("role_arn: MyRole\n", "IAM role ARN"),
    ("bucket: s3://b/x\n", "bucket name"),
    ("dry_run: maybe\n", "true or false"),
    ("key: [unclosed\n", "not valid YAML"),
])
def test_bad_config_files(tmp_path, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(str(cfg), environ={})


def test_missing_sagemaker_settings_name_the_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for k in ("BYOC_REGION", "BYOC_BUCKET", "BYOC_ROLE_ARN"):
        monkeypatch.delenv(k, raising=False)
    rc = main(["serve", "--backend", "sagemaker", "--dry-run"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--region" in err and "byoc.yaml" in err


def test_missing_config_file(capsys):
    assert main(["package", "x", "--config", "/nonexistent/byoc.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err
