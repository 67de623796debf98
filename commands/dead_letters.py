"""Dead letters: what a worker or a projector gave up on after its attempts, and what an
operator does about it.

The letters are events of the activity context (``DeadLetter.*``). A worker's letter
names a document, which the worker failed with a reason so that nothing waits on it;
retrying it sends the document through that stage again (``Document.Retried``), and the
worker resolves the letter when the stage goes through. A projector's letter names the
event it cannot apply; the projector waits on it (a read model applies in order), tries
again when a retry is asked for, and goes on past the event only when it is dropped.
"""

from __future__ import annotations

from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from commands.activity import ActivityApp
from commands.base import CommandResult
from commands.documents import DocumentsApp
from domain.activity import DeadLetter, DeadLetterState, ParkedMessage
from domain.document import DocumentNotFailedError
from domain.errors import NotFoundError


class DeadLetterNotFoundError(NotFoundError):
    code = "dead_letter_not_found"


def parking_actor(component: str) -> str:
    """Who parks: the component itself (``system:worker:parse``)."""
    return f"system:{component}"


class DeadLetters:
    def __init__(self, activity: ActivityApp, documents: DocumentsApp) -> None:
        self._activity = activity
        self._documents = documents

    # ------------------------------------------------------------ components

    def park(self, message: ParkedMessage) -> UUID:
        letter_id = DeadLetter.id_for(message.component, message.subject)
        letter = self._find(letter_id)
        actor = parking_actor(message.component)
        if letter is None:
            letter = DeadLetter.park(message, actor=actor)
            self._activity.record(letter)
        elif letter.is_projection and letter.state is DeadLetterState.DROPPED:
            pass  # dropped, and the projector not yet past it (it was stopped): it goes on
        elif letter.park_again(actor=actor, attempts=message.attempts, error=message.error):
            self._activity.record(letter)
        return letter_id

    def state(self, letter_id: UUID) -> DeadLetterState | None:
        letter = self._find(letter_id)
        return None if letter is None else letter.state

    def resolve(self, letter_id: UUID, component: str) -> bool:
        letter = self._find(letter_id)
        if letter is None or not letter.resolve(actor=parking_actor(component)):
            return False
        self._activity.record(letter)
        return True

    # ------------------------------------------------------------- operators

    def get(self, tenant_id: str, letter_id: UUID) -> DeadLetter:
        letter = self._find(letter_id)
        if letter is None or letter.tenant_id != tenant_id:
            raise DeadLetterNotFoundError(f"No dead letter {letter_id}.")
        return letter

    def retry(
        self, *, tenant_id: str, letter_id: UUID, actor: str, reason: str = ""
    ) -> CommandResult:
        """Another go: a projector tries the event again; a worker's document goes through
        its stage again. 409 ``dead_letter_state`` for a dropped or resolved letter."""
        letter = self.get(tenant_id, letter_id)
        if not letter.request_retry(actor=actor, reason=reason):  # decided first: it may refuse
            return self._unchanged(letter)
        if not letter.is_projection:
            try:
                self._documents.retry_document(
                    tenant_id=tenant_id, actor=actor, document_id=UUID(letter.aggregate_id)
                )
            except DocumentNotFailedError:
                document = self._documents.get_document(tenant_id, UUID(letter.aggregate_id))
                if not document.is_processing:  # deleted or erased since: nothing to retry
                    raise
        return self._recorded(letter)

    def drop(
        self, *, tenant_id: str, letter_id: UUID, actor: str, reason: str = ""
    ) -> CommandResult:
        """Give it up: a projector goes on past the event (its read model never applies
        it); a worker's document stays failed."""
        letter = self.get(tenant_id, letter_id)
        if not letter.drop(actor=actor, reason=reason):
            return self._unchanged(letter)
        return self._recorded(letter)

    # ---------------------------------------------------------------- helpers

    def _find(self, letter_id: UUID) -> DeadLetter | None:
        try:
            letter: DeadLetter = self._activity.repository.get(letter_id)
        except AggregateNotFoundError:
            return None
        return letter

    def _recorded(self, letter: DeadLetter) -> CommandResult:
        position = self._activity.record(letter)
        assert position is not None
        return CommandResult(letter.id, position, changed=True)

    def _unchanged(self, letter: DeadLetter) -> CommandResult:
        return CommandResult(letter.id, self._activity.position_of(letter.id), changed=False)
