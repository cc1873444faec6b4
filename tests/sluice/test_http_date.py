"""`sluice.http.headers.imf_fixdate` replaces `email.utils.formatdate(usegmt=True)` on the Date
header path (so the queue-proxy does not import the email package, issue 19): same bytes."""

from __future__ import annotations

import random
import time
from email.utils import formatdate

from sluice.http.headers import http_date, imf_fixdate


def test_imf_fixdate_matches_the_stdlib_formatter() -> None:
    rng = random.Random(19)
    # Every weekday and month, leap days, single-digit fields, the epoch and far dates.
    moments = [0, 951782400, 1709164800, 4102444799, 253402300799]
    moments += [rng.randrange(0, 4102444800) for _ in range(20000)]
    for t in moments:
        assert imf_fixdate(t) == formatdate(t, usegmt=True).encode(), t


def test_http_date_is_now() -> None:
    before = formatdate(time.time(), usegmt=True).encode()
    value = http_date()
    after = formatdate(time.time(), usegmt=True).encode()
    assert value in (before, after)
