"""Dead letters: what workers and projectors parked after their attempts, and what
operators did about it. ``GET /v1/admin/dead-letters``, ``kf dead-letters list``."""

from projections.dead_letters.projection import DeadLettersProjection
from projections.dead_letters.routes import router
from projections.dead_letters.view import DeadLetterEntry, DeadLettersView
from projections.slice import ReadModel

READ_MODEL = ReadModel(
    projection=DeadLettersProjection,
    view=DeadLettersView,
    migrations=("0014_dead_letters.sql",),
    router=router,
)

__all__ = ["READ_MODEL", "DeadLetterEntry", "DeadLettersProjection", "DeadLettersView"]
