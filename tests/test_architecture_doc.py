"""docs/architecture.md stays true: each room's section names every module the room holds, names no
module it does not hold, and the picture shows every room."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
ROOMS = ["consensus", "storage", *(f"node/{p.name}" for p in sorted((ROOT / "node").iterdir())
                                  if (p / "__init__.py").exists() and p.name not in ("cli", "client", "bench"))]


def sections() -> dict[str, str]:
    """Each `## ` heading with the text under it."""
    parts = re.split(r"^## (.+)$", DOC, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def section_of(room: str) -> str:
    found = [body for heading, body in sections().items() if re.match(rf"(.*, )?{re.escape(room)}[/:,]", heading)]
    assert len(found) == 1, f"docs/architecture.md needs one section whose heading names {room}"
    return found[0]


def modules_of(room: str) -> set[str]:
    return {p.stem for p in (ROOT / room).glob("*.py") if p.stem != "__init__"}


@pytest.mark.parametrize("room", ROOMS)
def test_each_module_of_a_room_is_named_in_its_section(room: str) -> None:
    body = section_of(room)
    unnamed = {m for m in modules_of(room) if f"`{m}`" not in body and f"({m})" not in body}
    assert not unnamed, f"docs/architecture.md, section on {room}, does not name {sorted(unnamed)}"


def test_each_room_in_the_picture_exists_and_each_room_is_drawn() -> None:
    picture = DOC.split("```")[1]
    drawn = set(re.findall(r"node/([a-z0-9_]+)", picture))
    assert drawn <= {p.name for p in (ROOT / "node").iterdir()} | {"server"}
    assert {room.removeprefix("node/") for room in ROOMS if room.startswith("node/")} <= drawn


def test_the_rooms_bottom_to_top_match_the_layering_test() -> None:
    from tests.test_layering import RANK  # the order the layering test enforces

    stated = re.search(r"bottom to top: (.+?); `consensus/`", DOC, flags=re.S)
    assert stated is not None
    levels = [re.findall(r"`([a-z_]+)`", level) for level in stated.group(1).split("<")]
    for lower, upper in zip(levels, levels[1:]):
        for a in lower:
            for b in upper:
                assert RANK[a] < RANK[b], f"the doc puts {a} below {b}; the layering test does not"
