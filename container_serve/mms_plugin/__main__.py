"""``python -m container_serve.mms_plugin DEST_DIR``: build the plugin jar (used by the serving image)."""

import sys

from container_serve.mms_plugin import build_plugin_jar

if len(sys.argv) != 2:
    sys.exit("usage: python -m container_serve.mms_plugin DEST_DIR")
print(build_plugin_jar(sys.argv[1]))
