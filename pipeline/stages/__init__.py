"""The stages, one module each, each a command of ``pipeline`` and a function, each writing files
the next one reads: fetch -> ingest -> split -> plan -> train -> calibrate -> score (and validate,
sample). ``run`` chains them as ``make train`` does.

Stages use the library pieces in ``pipeline`` (reading, data, networks, methods, trainer, ...);
the library never imports a stage, and a stage imports another only through ``run``.
"""
