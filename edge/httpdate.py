"""HTTP-date parsing and formatting (RFC 9110 §5.6.7).

Parsing is strict: a recipient must accept the three historical forms,
and anything else is invalid. A lenient parser would read
``7:05:09`` (a one-digit hour) as a valid time; RFC 9110 requires two
digits, and RFC 9111 §5.3 says an invalid Expires means "already
expired", so strictness matters for freshness.
"""

from __future__ import annotations

import calendar
import re
import time

_MONTHS = {
    name: index + 1
    for index, name in enumerate(
        "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    )
}
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = r"(\d\d):(\d\d):(\d\d)"
# IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
_IMF = re.compile(rf"{_DAY}, (\d\d) {_MONTH} (\d{{4}}) {_TIME} GMT")
# rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
_RFC850 = re.compile(rf"{_LONG_DAY}, (\d\d)-{_MONTH}-(\d\d) {_TIME} GMT")
# asctime-date: Sun Nov  6 08:49:37 1994
_ASCTIME = re.compile(rf"{_DAY} {_MONTH} ([ \d]\d) {_TIME} (\d{{4}})")


def parse_http_date(text: str | None) -> float | None:
    """Return the POSIX time of an HTTP-date, or None if it is invalid."""
    if text is None:
        return None
    text = text.strip()
    fields: tuple[str, str, str, str, str, str] | None = None
    if match := _IMF.fullmatch(text):
        day, month, year, hh, mm, ss = match.groups()
        fields = (year, month, day, hh, mm, ss)
    elif match := _RFC850.fullmatch(text):
        day, month, year2, hh, mm, ss = match.groups()
        # RFC 9110 §5.6.7: a two-digit year more than 50 years in the
        # future is read as the most recent past year with those digits.
        this_year = time.gmtime().tm_year
        year_num = this_year - this_year % 100 + int(year2)
        if year_num > this_year + 50:
            year_num -= 100
        fields = (str(year_num), month, day, hh, mm, ss)
    elif match := _ASCTIME.fullmatch(text):
        month, day, hh, mm, ss, year = match.groups()
        fields = (year, month, day.strip(), hh, mm, ss)
    if fields is None:
        return None

    return _to_posix(fields)


def _to_posix(fields: tuple[str, str, str, str, str, str]) -> float | None:
    year, month, day, hh, mm, ss = fields
    parts = (int(year), _MONTHS[month], int(day), int(hh), int(mm), int(ss))
    if not (1 <= parts[2] <= 31 and parts[3] < 24 and parts[4] < 60
            and parts[5] < 61):
        return None

    return float(calendar.timegm(parts + (0, 0, 0)))


def format_http_date(posix: float) -> str:
    """Return ``posix`` as an IMF-fixdate."""
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(posix))
