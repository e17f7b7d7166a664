"""Writes cronsim_cases.tsv: random five-field expressions, zones and last
ping times, with the next expected time as Healthchecks computes it
(cronsim, `pip install cronsim`; the file was made with cronsim 2.9).
Columns: expression, zone, last ping (unix ms), next (unix ms, or "none").
Not run by the tests: they read the file it wrote.
"""

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from cronsim import CronSim

random.seed(7)
ZONES = ["Europe/Paris", "America/New_York", "Australia/Sydney", "UTC", "Asia/Kolkata",
         "America/Santiago", "Europe/London", "Pacific/Chatham", "America/Sao_Paulo"]
MINUTES = ["*", "0", "30", "*/15", "5,35", "0-10/5", "*/7", "59", "15"]
HOURS = ["*", "2", "1", "3", "*/2", "0", "23", "1-3", "2,3", "9-17", "*/5"]
DAYS = ["*", "*", "1", "L", "15", "LW", "28-31", "*/10"]
MONTHS = ["*", "*", "3", "10", "MAR,OCT", "*/3", "11"]
WEEKDAYS = ["*", "*", "0", "SUN", "1-5", "5L", "0#1", "MON#2", "6,0"]
# Around daylight-saving changes in 2026, and one ordinary day.
STARTS = [datetime(2026, 3, 28), datetime(2026, 10, 24), datetime(2026, 3, 7),
          datetime(2026, 10, 31), datetime(2026, 4, 4), datetime(2026, 9, 26),
          datetime(2026, 1, 1)]

with open("cronsim_cases.tsv", "w") as out:
    for _ in range(1500):
        expr = " ".join(random.choice(f) for f in (MINUTES, HOURS, DAYS, MONTHS, WEEKDAYS))
        zone = random.choice(ZONES)
        last = random.choice(STARTS).replace(tzinfo=timezone.utc)
        last += timedelta(seconds=random.randrange(0, 4 * 86400))
        last = last.replace(microsecond=random.choice([0, 0, 500000]))
        try:
            nxt = next(CronSim(expr, last.astimezone(ZoneInfo(zone))))
            result = str(int(nxt.astimezone(timezone.utc).timestamp() * 1000))
        except StopIteration:
            result = "none"
        out.write(f"{expr}\t{zone}\t{int(last.timestamp() * 1000)}\t{result}\n")
