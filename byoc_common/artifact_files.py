"""The file names of the model artifact, importable without torch.

:mod:`byoc_common.artifact` defines the format and re-exports these names; this module exists so the
serving image's request gate (``container_serve.gate``), which never loads a model, can check a model
directory's layout without importing torch (about 300 MB of private memory per process), and the
training job's hyperparameter table (imported by the torch-free CLI) can bound what it lets a job save.
"""

WEIGHTS_FILE = "model.pth"
CLASSES_FILE = "classes.json"
CONFIG_FILE = "model_config.json"
ARTIFACT_FILES = (WEIGHTS_FILE, CLASSES_FILE, CONFIG_FILE)

# Bounds on what model_config.json may ask for: the server refuses a config outside them
# (byoc_common.artifact) and the trainer's image-size / resize-size checks use the same figures, so a
# job never trains a model the endpoint refuses. image_size sizes every forward pass (the warm-up
# alone at 6000 px needs ~12 GB), resize_size each request's resize, num_classes the head
# (ImageNet-21k has 21,843 classes).
MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 1024
MAX_RESIZE_SIZE = 2048
MAX_NUM_CLASSES = 100_000
