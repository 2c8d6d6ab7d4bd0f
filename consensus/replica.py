"""One replica's PBFT state machine, run the way IBFT 2.0 and QBFT run it.

One instance per height, rounds inside it. PRE-PREPARE (Proposal) from the
round's proposer, PREPARE once the block is validated, COMMIT with a seal once
2f+1 prepared it, and the block is final with 2f+1 seals. A round that times
out moves on by ROUND-CHANGE messages carrying the highest prepared
certificate, so a block that may have been committed is proposed again.

Everything this replica signs is signed by its SafetyRules, which may refuse,
and persisted (PersistSafetyState) before it is broadcast (`Signer`); `handle` emits
actions in the order they must be carried out.

Each height is decided by its own validator set. A replica never enters a height
whose set it was not told (`ValidatorSetKnown`): it parks there until it is
(`Heights`). Where its key is not a validator it follows and signs nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from consensus.actions import Action, Broadcast, BuildBlock, CommitBlock, RequestSync, ScheduleTimeout, ValidateBlock
from consensus.justification import Certificates, carried_block, highest_prepared
from consensus.config import ReplicaConfig
from consensus.events import BlockBuilt, BlockSynced, BlockValidated, Event, MessageReceived, TimeoutFired
from consensus.events import TransactionsPending, ValidatorSetKnown
from consensus.heights import DELIVER, KEPT, Heights
from consensus.messages import Commit, Crypto, Prepare, PreparedCertificate, Proposal, RoundChange, Signed
from consensus.round_state import Rounds, RoundState, RoundTally
from consensus.safety_state import SafetyState
from consensus.safety_rules import SafetyRules, SigningRefused, Unsealed
from consensus.signer import Signer
from consensus.validator_sets import ValidatorSets


class Replica:
    def __init__(
        self, config: ReplicaConfig, crypto: Crypto, height: int, safety: SafetyState | None = None,
        sign_from: int = 0, known_validators: Mapping[int, tuple[bytes, ...]] | None = None,
    ):
        """`config.validators` decide `height`; `known_validators` the later heights whose sets are known
        (None: a static chain, whose set never changes)."""
        self.config = config
        self.crypto = crypto
        self.round = 0
        self.dropped: Counter[str] = Counter()  # reason -> messages dropped (or refused signatures)
        sets = ValidatorSets(height, config.validators, known_validators)
        self._safety = safety if safety is not None and safety.height == height else None
        # A state from a later height is kept, so nothing signed there is signed again.
        kept = safety if safety is not None and safety.height >= height else SafetyState(height, 0, None, ())
        self._signer = Signer(SafetyRules(crypto, config.chain_id, sets, kept, sign_from))
        self._certificates = Certificates(config.chain_id, sets, crypto)
        self._heights = Heights(config, sets, self._certificates, height)
        self._actions: list[Action] = []
        self._reset_height()

    # ---- public API -------------------------------------------------------------

    @property
    def height(self) -> int:
        return self._heights.height

    @property
    def me(self) -> bytes:
        return self.crypto.public_key

    @property
    def sign_from(self) -> int:
        """Below this height the replica follows but signs nothing: after its store was
        rebuilt it cannot know what it signed there before."""
        return self._signer.sign_from

    def learn_sign_floor(self, height: int) -> None:
        """The floor the shell learnt from its peers, replacing the sign-nothing one it started with."""
        self._signer.learn_sign_floor(height)

    @property
    def validators(self) -> tuple[bytes, ...]:
        """The validators of the current height; none while parked at a height whose set is unknown."""
        return self._heights.current.validators if self._heights.current is not None else ()

    @property
    def is_validator(self) -> bool:
        """Whether this replica's key is among the current height's validators (else it follows)."""
        return self.me in self.validators

    @property
    def parked(self) -> bool:
        """Waiting at `height` for its validator set (ValidatorSetKnown) before running any round."""
        return self._heights.current is None

    def proposer(self, height: int, round_: int) -> bytes:
        """The proposer of `round_` at `height` (LookupError if that height's set is not known)."""
        return self._heights.proposer(height, round_)

    def tally(self) -> RoundTally | None:
        """Who was heard from in the current round; None while parked (no round runs)."""
        if self.parked:
            return None
        rs = self._rounds.get(self.round) or RoundState()
        return RoundTally(self.height, self.round, self._active, rs.proposal is not None, frozenset(rs.prepares),
                          frozenset(rs.commits), frozenset(rs.round_changes))

    def start(self) -> list[Action]:
        """First actions after construction: resume from the safety state or start round 0."""
        self._actions.clear()
        if self._safety is None:
            self._enter_round(0, send_round_change=False)
        else:
            self._resume(self._safety)
        return self._finish()

    def handle(self, event: Event) -> list[Action]:
        self._actions.clear()
        if isinstance(event, MessageReceived):
            self._on_message(event.signed)
        elif isinstance(event, ValidatorSetKnown):
            self._on_validator_set(event)
        elif isinstance(event, BlockSynced) and event.height >= self.height:
            self._advance(event.height + 1)  # catch-up stored what we had not decided
        elif self._heights.current is None:
            pass  # parked: no round runs, no timer, until the height's validators are known
        elif isinstance(event, TransactionsPending):
            self._activate()
        elif isinstance(event, BlockBuilt):
            self._on_block_built(event)
        elif isinstance(event, BlockValidated):
            self._on_block_validated(event)
        elif isinstance(event, TimeoutFired):
            self._on_timeout(event)
        return self._finish()

    # ---- bookkeeping ------------------------------------------------------------

    def _reset_height(self) -> None:
        assert self._heights.current is not None, "no round runs at a height whose validators are unknown"
        self.round = 0
        self.prepared: PreparedCertificate | None = None
        self._rounds = Rounds(self._heights.current)
        self._active = False

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _flush(self) -> None:
        self._actions.extend(self._signer.flush())

    def _finish(self) -> list[Action]:
        self._flush()
        actions, self._actions = self._actions, []
        return actions

    def _sign(self, message: Unsealed | PreparedCertificate) -> None:
        """Signs `message` (a COMMIT for a prepared certificate) to be persisted and sent, and
        delivers it to ourselves. A follower signs nothing."""
        if self.height < self.sign_from or not self.is_validator:
            return
        try:
            signed = self._signer.sign(self.height, message)
        except SigningRefused as refusal:
            self.dropped[refusal.reason] += 1
            return
        self._dispatch(signed)

    def _activate(self) -> None:
        """Starts the round timer once there is something to agree on."""
        if not self._active:
            self._active = True
            self._emit(ScheduleTimeout(self.height, self.round, self.config.round_timeout(self.round)))

    # ---- rounds and heights -----------------------------------------------------

    def _enter_round(self, round_: int, send_round_change: bool) -> None:
        self.round = round_
        self._rounds.forget_before(round_)
        if round_ > 0:
            self._active = False
            self._activate()
        if send_round_change:
            self._sign(RoundChange(self.height, round_, self.prepared))
        self._maybe_propose()

    def _maybe_propose(self) -> None:
        rs = self._rounds[self.round]
        if self.proposer(self.height, self.round) != self.me or rs.build_requested or rs.proposal:
            return
        if self.round == 0:
            rs.build_requested = True
            self._emit(BuildBlock(self.height, 0))
            return
        if not self._rounds.changed_to(self.round):
            return
        rs.justification = tuple(rs.round_changes.values())
        best = highest_prepared(rs.justification)
        if best is None:
            rs.build_requested = True
            self._emit(BuildBlock(self.height, self.round))
        else:
            block = carried_block(self.prepared, best, rs.justification)
            self._sign(Proposal(self.height, self.round, block, best.block_hash, rs.justification))

    def _advance(self, height: int) -> None:
        """Goes on to `height`, or parks there until its validator set is known."""
        self._flush()
        self.round, self.prepared = 0, None
        self._enter_height(self._heights.advance(height))

    def _enter_height(self, ready: list[Signed] | None) -> None:
        """Round 0 of the current height, then what was kept for it (None: parked, nothing runs)."""
        if ready is None:
            return
        self._reset_height()
        self._enter_round(0, send_round_change=False)
        for signed in ready:
            self._on_message(signed, verified=True)  # checked again, against this height's set

    def _on_validator_set(self, e: ValidatorSetKnown) -> None:
        try:
            ready = self._heights.learn(e.height, e.validators)
        except ValueError:
            self.dropped["invalid_validator_set"] += 1
            return
        self._enter_height(ready)

    def _resume(self, s: SafetyState) -> None:
        """After a restart: take up the round we were in and re-send what we signed there."""
        self.round = s.round
        self.prepared = s.prepared
        self._rounds[s.round].restore(s.sent)
        self._actions.extend(Broadcast(m) for m in s.sent)
        self._activate()
        for signed in s.sent:
            if self.height == s.height:
                self._dispatch(signed)
        if self.height == s.height:
            self._maybe_propose()

    # ---- events -----------------------------------------------------------------

    def _on_block_built(self, e: BlockBuilt) -> None:
        rs = self._rounds[self.round]
        if (e.height, e.round) != (self.height, self.round) or rs.proposal is not None:
            return
        self._sign(Proposal(self.height, self.round, e.block, e.block_hash, rs.justification))

    def _on_block_validated(self, e: BlockValidated) -> None:
        rs = self._rounds.get(e.round)
        if e.height != self.height or rs is None or rs.proposal is None:
            return
        if rs.proposal.block_hash != e.block_hash:
            return
        if not e.valid:
            self.dropped["invalid_block"] += 1
            rs.invalid = True
            self._check_committed(e.round)  # a quorum may have committed it regardless
            return
        rs.validated = True
        self._prepare(e.round, rs)
        if e.height == self.height:
            self._check_committed(e.round)  # seals may have come in before the verdict

    def _on_timeout(self, e: TimeoutFired) -> None:
        if (e.height, e.round) != (self.height, self.round):
            return
        self._sync_if_behind()
        if self._rounds.reached(self.round):
            self._enter_round(self.round + 1, send_round_change=True)
        else:
            self._send_again()

    def _send_again(self) -> None:
        """Repeats what this replica signed in its round (already persisted) and waits another timeout."""
        self._actions.extend(Broadcast(s) for s in self._signer.sent(self.height, self.round))
        self._emit(ScheduleTimeout(self.height, self.round, self.config.round_timeout(self.round)))

    def _sync_if_behind(self) -> None:
        """Stuck for a round while a validator signed for a later height: fetch what was decided."""
        ahead = self._heights.highest_ahead()
        if ahead is not None:
            self._emit(RequestSync(ahead))

    # ---- messages ---------------------------------------------------------------

    def _on_message(self, signed: Signed, verified: bool = False) -> None:
        verdict = self._heights.admit(signed, self.round, verified)
        if verdict == DELIVER:
            self._activate()
            self._dispatch(signed)
        elif verdict != KEPT:
            self.dropped[verdict] += 1
            if verdict == "far_height":
                self._emit(RequestSync(signed.message.height))

    def _dispatch(self, signed: Signed) -> None:
        m = signed.message
        if isinstance(m, Proposal):
            self._on_proposal(signed, m)
        elif isinstance(m, Prepare):
            self._on_prepare(signed, m)
        elif isinstance(m, Commit):
            self._on_commit(signed, m)
        else:
            self._on_round_change(signed, m)

    def _on_proposal(self, signed: Signed, p: Proposal) -> None:
        if signed.sender != self.proposer(p.height, p.round) or p.round < self.round:
            self.dropped["invalid_proposal"] += 1
            return
        if p.round > 0 and not self._certificates.justified(p):
            self.dropped["unjustified_proposal"] += 1
            return
        if p.round > self.round:
            self._enter_round(p.round, send_round_change=False)
        rs = self._rounds[p.round]
        if rs.proposal is not None:
            return
        rs.proposal = p
        if signed.sender == self.me:
            rs.validated = True
            self._prepare(p.round, rs)
        else:
            self._emit(ValidateBlock(p.height, p.round, p.block, p.block_hash))

    def _prepare(self, round_: int, rs: RoundState) -> None:
        assert rs.proposal is not None
        if rs.my_prepare is None and round_ == self.round:
            rs.my_prepare = rs.proposal.block_hash
            self._sign(Prepare(self.height, round_, rs.proposal.block_hash))  # delivery checks the tally
        else:
            self._check_prepared(round_)

    def _on_prepare(self, signed: Signed, m: Prepare) -> None:
        if m.round < self.round:
            return
        rs = self._rounds[m.round]
        rs.prepares.setdefault(signed.sender, signed)
        self._check_prepared(m.round)

    def _check_prepared(self, round_: int) -> None:
        rs = self._rounds[round_]
        p = rs.proposal
        if p is None or not rs.validated or rs.my_commit or round_ != self.round:
            return
        if rs.my_prepare not in (None, p.block_hash):
            return  # never commit anything but what we prepared
        votes = self._rounds.prepared(round_, p.block_hash)
        if votes is None:
            return
        self.prepared = PreparedCertificate(round_, p.block, p.block_hash, votes)
        rs.my_commit = True
        self._sign(self.prepared)

    def _on_commit(self, signed: Signed, m: Commit) -> None:
        rs = self._rounds[m.round]
        rs.commits.setdefault(signed.sender, signed)
        self._check_committed(m.round)

    def _check_committed(self, round_: int) -> None:
        rs = self._rounds[round_]
        p = rs.proposal
        decided = self._rounds.decided(round_)
        if decided is None:
            return
        block_hash, seals = decided
        if p is None or p.block_hash != block_hash or rs.invalid:
            self._emit(RequestSync(self.height))  # decided a block we do not hold or found invalid: fetch theirs
            return
        if not rs.validated:
            return  # its bytes may not match the hash: BlockValidated checks again
        self._flush()
        self._emit(CommitBlock(self.height, p.block, p.block_hash, seals))
        self._advance(self.height + 1)

    def _on_round_change(self, signed: Signed, m: RoundChange) -> None:
        if m.prepared is not None and not self._certificates.valid_prepared(m.prepared, self.height, m.round):
            self.dropped["invalid_round_change"] += 1
            return
        if self._rounds.add_round_change(signed, m, self.round):
            self._on_round_quorum(m.round)
        join = self._rounds.to_join(self.round)
        if join is not None:
            self._enter_round(join, send_round_change=True)  # f+1 are in later rounds: one is honest
        if m.round == self.round:
            self._maybe_propose()

    def _on_round_quorum(self, round_: int) -> None:
        """2f+1 reached our round: give it a whole timeout from now.

        A replica that got there first (its earlier timer fired first) would
        otherwise leave the round just as the others arrive, and if it is the
        proposer, before its block is built: one round lost per round, for ever.
        """
        if round_ == self.round:
            self._emit(ScheduleTimeout(self.height, round_, self.config.round_timeout(round_)))
