"""Semi-supervised screening pipeline for medical imaging.

Stages (each a command and a function): fetch, ingest, split, train, calibrate, score.
"""

__version__ = "0.1.0"
