"""``byoc pipeline``: the main job, every step in order on one backend, resumable.

* :mod:`.profiles` -- the sizes of a run (``demo``, ``tiny``) and the demo's fixed hyperparameters;
* :mod:`.state` -- ``<run dir>/state.json``: what finished, with its outputs;
* :mod:`.steps` -- the steps, each a call on the :class:`~byoc.backends.base.Backend` interface;
* :mod:`.runner` -- runs the steps in order, skips finished ones, reports a failure with the
  command that resumes, and prints the summary of every artifact.
"""
