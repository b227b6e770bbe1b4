"""Build the MMS endpoint plugin that serves ``GET /execution-parameters`` (see the .java file).

The jar is compiled with ``javac`` against MMS's own ``model-server.jar`` (which contains the servingsdk
interfaces). The serving image builds it once at image build time
(``python -m container_serve.mms_plugin /opt/byoc/mms-plugins``) and sets ``BYOC_MMS_PLUGINS_DIR``;
elsewhere :func:`ensure_plugins_dir` builds it on first use into a cache folder keyed by the source's
hash. Without a JDK the server still starts, only ``/execution-parameters`` answers 404.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from byoc_common import durable

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "ExecutionParametersEndpoint.java"
SERVICE_FILE = HERE / "software.amazon.ai.mms.servingsdk.ModelServerEndpoint"
JAR_NAME = "byoc-mms-plugins.jar"


class PluginBuildError(RuntimeError):
    pass


def mms_jar() -> Path:
    import mms

    return Path(mms.__file__).resolve().parent / "frontend" / "model-server.jar"


def _source_hash() -> str:
    h = hashlib.sha256(SOURCE.read_bytes() + SERVICE_FILE.read_bytes() + str(mms_jar()).encode())
    return h.hexdigest()[:16]


def build_plugin_jar(dest_dir: str | os.PathLike) -> Path:
    """Compile the plugin into ``dest_dir/byoc-mms-plugins.jar``."""
    javac = shutil.which("javac")
    if javac is None:
        raise PluginBuildError("javac not found (a JDK is needed to build the MMS plugin)")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([javac, "-nowarn", "-cp", str(mms_jar()), "-d", tmp, str(SOURCE)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise PluginBuildError(f"javac failed:\n{proc.stderr}")

        def write_jar(f) -> None:  # durable: concurrent first starts each write their own temporary file
            with zipfile.ZipFile(f, "w") as jar:
                jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
                jar.write(SERVICE_FILE, f"META-INF/services/{SERVICE_FILE.name}")
                for cls in Path(tmp).rglob("*.class"):
                    jar.write(cls, cls.relative_to(tmp).as_posix())

        durable.write_with(dest / JAR_NAME, write_jar)
    return dest / JAR_NAME


def ensure_plugins_dir() -> Path | None:
    """A folder holding the plugin jar (for MMS's ``plugins_path``), or None when it cannot be built."""
    configured = os.environ.get("BYOC_MMS_PLUGINS_DIR")
    if configured:
        if (Path(configured) / JAR_NAME).is_file():
            return Path(configured)
        logger.warning("BYOC_MMS_PLUGINS_DIR=%s has no %s; building one", configured, JAR_NAME)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "byoc" / "mms-plugins" / _source_hash()
    if (cache / JAR_NAME).is_file():
        return cache
    try:
        build_plugin_jar(cache)
    except (PluginBuildError, OSError) as e:
        logger.warning("GET /execution-parameters disabled: %s", e)
        return None
    return cache

