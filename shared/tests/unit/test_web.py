"""Web helpers without a server."""

from __future__ import annotations

import pytest

from contacts_shared.web import InFlightLimit, Problem


def test_requests_beyond_the_in_flight_limit_are_refused_until_one_ends() -> None:
    limit = InFlightLimit(2)
    with limit.slot(), limit.slot():
        with pytest.raises(Problem) as refused, limit.slot():
            pass
        assert refused.value.status == 429
        assert refused.value.headers == {"Retry-After": "1"}
    with limit.slot():
        assert limit.current == 1
    assert limit.current == 0
