"""The file names of the model artifact, importable without torch.

:mod:`byoc_common.artifact` defines the format and re-exports these names; this module exists so the
serving image's request gate (``container_serve.gate``), which never loads a model, can check a model
directory's layout without importing torch (about 300 MB of private memory per process).
"""

WEIGHTS_FILE = "model.pth"
CLASSES_FILE = "classes.json"
CONFIG_FILE = "model_config.json"
ARTIFACT_FILES = (WEIGHTS_FILE, CLASSES_FILE, CONFIG_FILE)
