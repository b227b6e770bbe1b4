"""The contract both images share: how a trained model is laid out on disk and how to rebuild it.

The training image writes a model directory with :func:`byoc_common.artifact.save_model_artifact`;
the serving image reads it back with :func:`byoc_common.artifact.load_model_artifact`.
Nothing else in either image may hard-code those file names.
"""
