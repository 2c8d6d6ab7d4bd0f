"""Checking an archive (node/disk/archive.py) offline, with only the genesis: `alliance archive verify`.

Every segment the manifest lists must be there, whole (its SHA-256), in height order without a gap, name
the chain and genesis, and link to the segment before it. Every block must be at its height, link to the
block before it (the first to the genesis), name the validators of its height and carry a certificate
that is a quorum of them; its transactions must give its header's tx root and, replayed from the genesis
state (integrity.Replay), its receipt root, state root and next validators. The validators of each height
come from that replay, so an archive is checked from block 1: a partial one (from a height above 1) would
need a trusted header and the validators of its first height, which this check does not take.
"""

from __future__ import annotations

from pathlib import Path

from node.chain.block import BlockError, Header, decode_block, decode_certificate, verify_certificate
from node.chain.candidate import BlockInvalid, check_tx_root
from node.chain.genesis import Genesis
from node.chain.governance import ReadState, upcoming_members
from node.chain.membership import validators_hash
from node.chain.tx import tx_hash_of
from node.disk.archive import ArchiveError, Record, SegmentEntry, SegmentFault, file_sha256, load_manifest, read_segment
from node.disk.integrity import Fault, Replay


def verify_archive(directory: Path, genesis: Genesis) -> tuple[int, Fault | None]:
    """Checks the whole archive: the blocks that passed, and the first fault (None when it all holds).
    Raises ArchiveError when there is no archive to check."""
    manifest = load_manifest(directory)
    if manifest is None:
        raise ArchiveError(f"{directory} holds no archive manifest")
    if manifest.chain_id != genesis.chain_id or manifest.genesis_hash != genesis.hash():
        return 0, Fault(1, f"is archived for chain {manifest.chain_id!r} of another genesis")
    if not manifest.segments:
        raise ArchiveError(f"{directory} holds no segments")
    lowest = min(s.first for s in manifest.segments)
    if lowest != 1:
        raise ArchiveError(f"the archive starts at block {lowest}: checking it needs the "
                           "blocks from 1 (a partial archive can be checked only against a trusted header)")
    check = _Check(genesis)
    try:
        for entry in manifest.segments:
            check.segment(directory, entry)
    except Fault as fault:
        return check.verified, fault
    return check.verified, None


class _Check:
    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.replay = Replay(genesis)
        self.prev_hash = genesis.hash()
        self.next_height = 1
        self.verified = 0

    def segment(self, directory: Path, entry: SegmentEntry) -> None:
        path = directory / entry.file
        if entry.first != self.next_height or entry.last < entry.first:
            raise Fault(self.next_height, f"is not where the manifest's segments go on ({entry.file} holds "
                                          f"{entry.first}..{entry.last}): segments are missing or out of order")
        if not path.is_file():
            raise Fault(entry.first, f"is in segment {entry.file}, which is missing")
        try:
            whole = file_sha256(path) == entry.sha256
            self._records(path, entry)
        except (SegmentFault, OSError) as exc:
            height = min(self.next_height, entry.last)  # bytes after the last block are the last one's segment's
            raise Fault(height, f"cannot be read from {entry.file}: {exc}") from None
        if not whole:  # every block checked and yet other bytes: say so, at the segment
            raise Fault(entry.first, f"begins segment {entry.file}, whose SHA-256 is not the manifest's")

    def _records(self, path: Path, entry: SegmentEntry) -> None:
        header, records = read_segment(path)
        expected = [header[0], 1, self.genesis.chain_id, self.genesis.hash(), entry.first, entry.last, self.prev_hash]
        if header != expected:
            raise Fault(entry.first, f"begins segment {entry.file}, whose header does not name this chain, "
                                     "these heights and the last block before them")
        for record in records:
            if self.next_height > entry.last:
                raise Fault(entry.last, f"ends segment {entry.file}, which holds more records after it")
            self._block(record)
        if self.next_height <= entry.last:
            raise Fault(self.next_height, f"is missing from segment {entry.file} (cut short)")

    def _block(self, record: Record) -> None:
        height = self.next_height
        try:
            block = decode_block(record.block)
            certificate = decode_certificate(record.certificate)
        except BlockError as exc:
            raise Fault(height, f"does not decode: {exc}") from None
        header = block.header
        if header.height != height or header.chain_id != self.genesis.chain_id:
            raise Fault(height, f"holds block {header.height} of chain {header.chain_id!r}")
        if header.prev_hash != self.prev_hash:
            raise Fault(height, "does not link to the block before it")
        self._certified(header, certificate)
        try:
            check_tx_root(header, [tx_hash_of(tx) for tx in block.txs])
        except BlockInvalid:
            raise Fault(height, "has transactions that differ from its header's root") from None
        if self.replay.apply(header, block.txs) != record.receipts:
            raise Fault(height, "is archived with receipts other than its execution gives")
        self.prev_hash, self.next_height, self.verified = header.hash(), height + 1, self.verified + 1

    def _certified(self, header: Header, certificate: tuple[tuple[bytes, bytes], ...]) -> None:
        state = ReadState(lambda key: self.replay.state.get(key))
        keys = upcoming_members(state, self.genesis.members, header.height).validator_keys
        if header.validators_hash != validators_hash(keys):
            raise Fault(header.height, "names other validators than the chain's membership at its height")
        if not verify_certificate(header.hash(), certificate, keys).quorate:
            raise Fault(header.height, "has a commit certificate that is not a quorum of the validators of its height")
