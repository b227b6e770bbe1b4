"""Datasets for training: an ImageFolder with ``train/ valid/ test/`` (the dogImages layout).

* :mod:`.prepare` -- ``byoc data``: pick a source, build or download it once, validate it;
* :mod:`.fashion_mnist` -- real images from Debian's ``dataset-fashion-mnist`` (offline);
* :mod:`.synthetic` -- generated shapes, for tests and machines without Fashion-MNIST.

The layout itself (split names, image suffixes) is the trainer's contract,
:mod:`container_train.contract`; this package imports it.
"""
