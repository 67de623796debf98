"""The read models, in one list: add a slice here and nothing else needs to know.

This list drives the composition root (views, routers), ``kf migrate``
(their tracking tables), ``kf project``, ``kf projections status``,
``kf rebuild-index``, the rebuild API and the test harness.
"""

from __future__ import annotations

from projections import (
    audit,
    catalog,
    conversations,
    dead_letters,
    fulltext,
    keys,
    readers,
    search,
    usage,
)
from projections.slice import ReadModel

READ_MODELS: tuple[ReadModel, ...] = (
    catalog.READ_MODEL,
    fulltext.READ_MODEL,
    search.READ_MODEL,
    keys.READ_MODEL,
    conversations.READ_MODEL,
    audit.READ_MODEL,
    readers.READ_MODEL,
    usage.READ_MODEL,
    dead_letters.READ_MODEL,
)


def names() -> list[str]:
    return [model.name for model in READ_MODELS]


def by_name(name: str) -> ReadModel:
    for model in READ_MODELS:
        if model.name == name:
            return model
    raise KeyError(f"no read model {name!r}; known: {', '.join(names())}")
