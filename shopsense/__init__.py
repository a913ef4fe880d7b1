"""shopsense: multimodal review sentiment with similar-review retrieval.

The core package: settings, data contracts, object store, data loaders, model definitions,
registry client and the ``shopsense`` command. Deployables (``services``, ``operators``,
``pipelines``) import from here, never the other way round.
"""

__all__ = ["LABELS", "MODEL_NAME", "__version__"]

__version__ = "0.1.0"

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
MODEL_NAME = "shopsense-sentiment"
