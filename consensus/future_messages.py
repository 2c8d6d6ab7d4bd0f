"""Verified messages for heights this replica has not entered, kept for later within bounds.

A message for a height whose validator set is not yet known is kept on its
signature alone; the replica checks its sender against that height's set when
it takes it.
"""

from __future__ import annotations

from collections import Counter

from consensus.messages import Signed


class FutureMessages:
    def __init__(self, heights_max: int, messages_max: int):
        self._heights_max = heights_max  # heights ahead whose messages are kept
        self._messages_max = messages_max  # messages kept, in all
        self._kept: dict[int, list[Signed]] = {}
        self._senders: Counter[bytes] = Counter()  # messages each sender has in _kept
        self._ahead: dict[bytes, int] = {}  # validator -> highest later height it signed for

    def keep(self, signed: Signed, height: int, validators: int) -> str | None:
        """Keeps `signed`, for `height` (not yet entered) or later, or says why not (a drop reason).

        Each sender gets its share of the room among the `validators` of the
        message's height (or, when that set is unknown, of the latest known).
        """
        later = signed.message.height
        assert later >= height, (later, height)
        if later > self._ahead.get(signed.sender, 0):
            self._ahead[signed.sender] = later
        if later > height + self._heights_max or sum(self._senders.values()) >= self._messages_max:
            return "far_height"
        if self._senders[signed.sender] >= max(1, self._messages_max // validators):
            return "sender_over_limit"
        self._kept.setdefault(later, []).append(signed)
        self._senders[signed.sender] += 1
        return None

    def take(self, height: int) -> list[Signed]:
        """Forgets what is for heights before `height` and hands over what is for `height`."""
        self._kept = {h: msgs for h, msgs in self._kept.items() if h >= height}
        self._ahead = {v: h for v, h in self._ahead.items() if h > height}
        ready = self._kept.pop(height, [])
        self._senders = Counter(s.sender for msgs in self._kept.values() for s in msgs)
        return ready

    def highest_ahead(self, height: int) -> int | None:
        """The highest height after `height` any validator signed for, if one did.

        One signer is enough to go and fetch what was decided. Waiting for f+1
        would let f validators that stay behind keep an honest replica from the
        quorum that went on without it; a faulty signer costs one fetch per
        timeout, as catch-up checks certificates.
        """
        ahead = [h for h in self._ahead.values() if h > height]
        return max(ahead) if ahead else None
