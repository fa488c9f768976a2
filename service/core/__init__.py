"""The pure core: what a job declares and how it is judged, with no I/O at all.

- units: durations, sizes and percents as people write them; visible: quoting and shortening of
  outside text; problems: a pydantic error as a person reads it; kinds: the shared `Literal`
  words (statuses, severities, notice kinds); clock: the injected `Clock`; hosts: which names
  mean this machine.
- jobspec: a job's declaration (the YAML file, the database and the API share it); silencespec:
  a recurring silence's declaration; scan_options: how an app's scans run (a frozen value).
- rules: `evaluate(job, artifacts, now) -> status, reasons, deadline` (pure, `now` injected).

May import the standard library, pydantic, cronsim and each other; never SQLAlchemy, aiohttp, the
database, the sources or anything that reads a file or a socket (tests/unit/test_pure_core.py).
"""
