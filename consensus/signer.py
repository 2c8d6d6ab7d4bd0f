"""What a replica signs: signed by its safety rules and held back until the
state that covers it is persisted."""

from __future__ import annotations

from consensus.actions import Action, Broadcast, PersistSafetyState
from consensus.messages import PreparedCertificate, Signed
from consensus.safety_rules import SafetyRules, Unsealed


class Signer:
    def __init__(self, rules: SafetyRules):
        self._rules = rules
        self._outbox: list[Signed] = []  # signed, not yet handed to `flush`

    @property
    def sign_from(self) -> int:
        return self._rules.sign_from

    def learn_sign_floor(self, height: int) -> None:
        self._rules.learn_sign_floor(height)

    def sign(self, height: int, message: Unsealed | PreparedCertificate) -> Signed:
        """Signs `message` (a COMMIT for a prepared certificate) at `height`; raises SigningRefused."""
        if isinstance(message, PreparedCertificate):
            signed = self._rules.commit(height, message)
        else:
            signed = self._rules.sign(message)
        assert self._rules.state.sent[-1] is signed  # in the next PersistSafetyState
        self._outbox.append(signed)
        return signed

    def sent(self, height: int, round_: int) -> tuple[Signed, ...]:
        """What was signed in `round_` of `height`."""
        s = self._rules.state
        return s.sent if (s.height, s.round) == (height, round_) else ()

    def flush(self) -> list[Action]:
        """Persist what was signed, then let it leave: the order safety needs."""
        if not self._outbox:
            return []
        actions: list[Action] = [PersistSafetyState(self._rules.state)]
        actions.extend(Broadcast(s) for s in self._outbox)
        self._outbox = []
        return actions
