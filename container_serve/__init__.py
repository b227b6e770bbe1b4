"""Serving image code: multi-model-server + a TorchServe-style image classifier handler (see README.md)."""
