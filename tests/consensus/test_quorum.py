"""f and the quorum size for small validator sets."""

from __future__ import annotations

import pytest

from consensus.quorum import fault_tolerance, quorum

SIZES = range(1, 11)


@pytest.mark.parametrize("n", SIZES)
def test_fault_tolerance_is_the_largest_f_with_3f_below_n(n: int) -> None:
    f = fault_tolerance(n)
    assert 3 * f + 1 <= n < 3 * (f + 1) + 1


@pytest.mark.parametrize("n", SIZES)
def test_two_quorums_share_f_plus_one_validators(n: int) -> None:
    assert 2 * quorum(n) - n >= fault_tolerance(n) + 1


@pytest.mark.parametrize("n", SIZES)
def test_a_quorum_needs_no_faulty_validator(n: int) -> None:
    assert quorum(n) <= n - fault_tolerance(n)


@pytest.mark.parametrize("n", SIZES)
def test_quorum_is_the_least_size_that_intersects_safely(n: int) -> None:
    smaller = quorum(n) - 1
    assert 2 * smaller - n < fault_tolerance(n) + 1


@pytest.mark.parametrize(("n", "f", "q"), [(1, 0, 1), (3, 0, 2), (4, 1, 3), (5, 1, 4), (7, 2, 5), (10, 3, 7)])
def test_known_values(n: int, f: int, q: int) -> None:
    assert (fault_tolerance(n), quorum(n)) == (f, q)
