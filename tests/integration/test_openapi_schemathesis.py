"""Schemathesis against /api/openapi.json: a real server on a real port, a real database.

Every operation of the document gets a bounded number of generated requests, valid and
invalid ones, and every answer goes through all of schemathesis's checks: no 5xx, status code,
content type and body as documented, invalid requests rejected, valid ones accepted (but for the
refusals no JSON Schema can express, see SEMANTIC_REJECTIONS), auth enforced, 405 and `Allow`
for undeclared methods.

Schemathesis needs the document when pytest collects the tests (one test per operation), before
any server runs: the document is built from the application, and
`test_the_served_document_is_the_one_under_test` proves it is the one /api/openapi.json serves.
(`schemathesis.pytest.from_fixture` would load it from the live server, but schemathesis 4.32
reads `Function._nodeid`, which pytest 9.2 no longer has.)

Each operation gets its own server and database, seeded through the API with two jobs and a
scan; in valid cases the `{job}` path parameter names one of those jobs two times out of three,
and they are put back after every request that may have changed or deleted them. Schemathesis
calls are blocking, so the server runs its own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.openapi.checks import RejectedPositiveData

from service.core.jobspec import DECLARATION_FIELDS
from service.http.api.openapi import build_document
from service.runtime.app import create_app
from service.settings import Settings, load_settings

from tests.support import make_file

# Hypothesis keeps caches in `.hypothesis/` under the working directory and starts filling them
# while pytest collects this module (constants of local modules; later, Unicode tables): keep
# them out of the repository, unless HYPOTHESIS_STORAGE_DIRECTORY says where they go.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(
        Path(tempfile.gettempdir()) / f"backup-monitor-hypothesis-{os.getuid()}"
    )

TOKEN = "schemathesis-read-write-token"  # API_TOKEN: read-write
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Per operation, for the fuzzing phase; the examples and coverage phases add their own cases.
MAX_EXAMPLES = 20
SEED = 20240611
MUTATING = {"PATCH", "DELETE", "POST"}
JOB_PATH = "/api/v1/jobs/{job}"
SILENCE = {"jobs": ["db-nightly"], "duration": "1h", "comment": "seeded by the test"}
SEEDED_SILENCE_ID = 1  # the first silence of a fresh database


def seeded_declarations(backups: Path) -> dict[str, dict[str, Any]]:
    return {
        "db-nightly": {"schedule": {"every": "1d"}},
        "local-files": {
            "description": "files under a temporary directory",
            "tags": ["local"],
            "source": {"type": "local", "path": str(backups), "pattern": "*.tar"},
            "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Paris"},
            "rules": {"min_size": "1KiB", "min_count": 1},
        },
    }


SEEDED_NAMES = sorted(seeded_declarations(Path("/")))


class LiveServer:
    """The application on 127.0.0.1 and an ephemeral port, served by its own loop in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.base_url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="api-under-test", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(create_app(self.settings, scheduler=False), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            self.base_url = f"http://{host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._error is not None:
            raise RuntimeError("the server did not start") from self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the server did not stop"
        if self._error is not None:
            raise RuntimeError("the server failed") from self._error


@dataclass
class Api:
    base_url: str
    session: requests.Session
    jobs: dict[str, dict[str, Any]]

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(
            method, self.base_url + path, headers=AUTH, timeout=30, **kwargs
        )

    def restore_jobs(self) -> None:
        """Give the seeded jobs their declarations back (re-create the deleted ones)."""
        for name, declaration in self.jobs.items():
            # Every field: a field sent as null gets its default back.
            change = {field: declaration.get(field) for field in DECLARATION_FIELDS}
            response = self.request("PATCH", f"/api/v1/jobs/{name}", json=change)
            if response.status_code == 404:
                response = self.request("POST", "/api/v1/jobs", json={"name": name, **declaration})
            assert response.status_code in (200, 201), f"restoring {name}: {response.text}"


@pytest.fixture
def live_api(database_url: str, tmp_path: Path) -> Iterator[Api]:
    """The service with its own database, seeded with a couple of jobs and one finished scan."""
    backups = tmp_path / "backups"
    now = datetime.now(UTC)
    make_file(backups / "a.tar", 2048, now)
    make_file(backups / "b.tar", 4096, now)
    settings = load_settings(
        database_url=database_url, api_token=TOKEN, scan_roots=(tmp_path,), metrics_token=None
    )
    server = LiveServer(settings)
    server.start()
    try:
        with requests.Session() as session:
            api = Api(server.base_url, session, seeded_declarations(backups))
            for name, declaration in api.jobs.items():
                created = api.request("POST", "/api/v1/jobs", json={"name": name, **declaration})
                assert created.status_code == 201, created.text
            silence = api.request("POST", "/api/v1/silences", json=SILENCE)
            assert silence.status_code == 201, silence.text
            assert silence.json()["id"] == SEEDED_SILENCE_ID  # map_case names it
            scan = api.request("POST", "/api/v1/scans", params={"wait": "true"})
            assert scan.status_code == 200, scan.text
            assert scan.json()["status"] == "finished", scan.text
            yield api
    finally:
        server.stop()


def build_served_document() -> dict[str, Any]:
    """What /api/openapi.json serves: the document depends on the routes only."""
    return build_document(create_app(load_settings(database_url="sqlite+aiosqlite://")))


DOCUMENT = build_served_document()
schema = schemathesis.openapi.from_dict(
    copy.deepcopy(DOCUMENT),
    config=schemathesis.Config.from_dict(
        {"seed": SEED, "generation": {"deterministic": True, "database": "none"}}
    ),
)


# --- steering generation toward the interesting rows ------------------------------------------

# Schedules for the jobs steered into existence (random ones rarely give exactly one of the two).
SCHEDULES = (
    {"every": 60},
    {"every": "1h30m"},
    {"cron": "0 3 * * *", "timezone": "Europe/Paris"},
)


def pick(value: object, choices: int) -> int:
    """A choice that depends on the generated value only (and not on PYTHONHASHSEED)."""
    return zlib.crc32(repr(value).encode()) % choices


@schema.hook
def filter_case(context: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    """Leave out the cases whose query has a parameter valued `[]`: `requests` sends nothing for
    it, yet schemathesis judges the case by it (`?before=1`, sent for {"before": 1, "": []},
    would count as an undeclared parameter accepted)."""
    return not (case.query and any(value == [] for value in case.query.values()))


@schema.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """In valid cases, two thirds of the `{job}` values name a seeded job (and of the
    `{silence_id}` values the seeded silence), half of the bodies of POST /api/v1/jobs get a
    valid name and schedule and no source: no random body passes the name pattern, the one-of
    `every`/`cron` rule and SCAN_ROOTS; half of those of POST /api/v1/silences a window from now.

    Invalid cases are left alone: what makes them invalid may be the very value replaced."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return case
    if case.path_parameters and "job" in case.path_parameters:
        choice = pick(case.path_parameters["job"], 3)
        if choice < len(SEEDED_NAMES):
            case.path_parameters = {**case.path_parameters, "job": SEEDED_NAMES[choice]}
    elif case.path_parameters and "silence_id" in case.path_parameters:
        if pick(case.path_parameters["silence_id"], 3) < 2:
            case.path_parameters = {**case.path_parameters, "silence_id": SEEDED_SILENCE_ID}
    elif case.operation.label == "POST /api/v1/silences" and isinstance(case.body, dict):
        # Random times are mostly over already or years ahead: half the bodies get a window
        # from now on.
        if pick(case.body, 2) == 0:
            case.body = {**case.body, "starts_at": None, "ends_at": None, "duration": 3600}
    elif case.operation.label == "POST /api/v1/jobs" and isinstance(case.body, dict):
        choice = pick(case.body, 2 * len(SCHEDULES))
        if choice < len(SCHEDULES):
            name = f"job-{zlib.crc32(repr(case.body).encode()):08x}"
            case.body = {**case.body, "name": name, "schedule": SCHEDULES[choice], "source": None}
    return case


# --- what the document cannot say ------------------------------------------------------------

# A schema-valid job declaration may still be refused (422) for a reason no JSON Schema can
# carry. Only these rejections are excused from `positive_data_acceptance`, each recognized by
# the service's own message; any other refusal of schema-valid data (say, a name that does not
# match the name pattern) means the document is wrong, and fails.
SEMANTIC_REJECTIONS = {
    # The cron grammar, and whether the expression ever fires.
    "cron": re.compile(r"^bad cron expression |^cron expression .* never fires$"),
    # The server's time zone database.
    "time zone": re.compile(r"^unknown time zone "),
    # The server's SCAN_ROOTS setting.
    "scan roots": re.compile(r" outside SCAN_ROOTS \("),
    # The server's CHANNELS_FILE (the channels a job may name).
    "channels": re.compile(r"^no channel .* \(configured channels: "),
    # Two fields compared with each other.
    "sizes": re.compile(r"^min_size \(\d+ bytes\) is larger than max_size \(\d+ bytes\)$"),
    "durations": re.compile(r"^min_duration \(\d+ s\) is longer than max_duration \(\d+ s\)$"),
    # Which verification a job's kind of source supports (verify against source.type).
    "verify": re.compile(
        r"^verify needs a source: |^verify declares nothing to check: "
        r"|^verify\.archive and verify\.checksum (read files|are not supported for) "
        r"|^verify\.repository applies to restic and borg sources only$"
        r"|^verify\.repository\.read_data_subset is restic's option; "
    ),
    # A silence's window, against the server's clock (over already, too long, too far ahead).
    "silence window": re.compile(
        r"^this silence would already be over: |^ends_at \(.*\) is not after starts_at "
        r"|^a silence lasts at most 90 days |^starts_at is more than 365 days ahead "
        r"|^a date out of range "
    ),
    # The quantity a unit string stands for ("0s" as `every`, "150%"): bounds apply to numbers.
    "unit strings": re.compile(
        r"^Input should be greater than 0$|^a percentage must be between 0 and 100 \(got '"
        r"|^a duration cannot exceed ten years \(\d+ s; got '"
    ),
}


# JSON allows "\udcff" (an unpaired surrogate escape) and so does JSON Schema's "string", but it
# is no text at all: it cannot be encoded to UTF-8, and no database stores it. Refused with 400.
UNPAIRED_SURROGATE = "the body contains an unpaired surrogate escape"


def rejected_for_semantic_reasons(response: schemathesis.Response) -> bool:
    if response.status_code == 400:
        return response.json()["error"]["message"].startswith(UNPAIRED_SURROGATE)
    if response.status_code != 422:
        return False
    details = response.json()["error"]["details"]
    return bool(details) and all(
        any(rule.search(detail["message"]) for rule in SEMANTIC_REJECTIONS.values())
        for detail in details
    )


@schema.hook
def filter_failure(
    context: schemathesis.HookContext,
    failure: Any,
    case: schemathesis.Case,
    response: schemathesis.Response,
) -> bool:
    if isinstance(failure, RejectedPositiveData):
        return not rejected_for_semantic_reasons(response)
    return True


# --- the tests ---------------------------------------------------------------------------------


@schema.parametrize()
@hypothesis.settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # One server and database per operation on purpose: the cases of an operation share them.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_api_answers_as_documented(case: schemathesis.Case, live_api: Api) -> None:
    # Redirects are answers too (the dashboard's 303s are documented): check them as they come.
    response = case.call(
        base_url=live_api.base_url, session=live_api.session, headers=AUTH, allow_redirects=False
    )
    try:
        case.validate_response(
            response,
            headers=AUTH,
            transport_kwargs={
                "base_url": live_api.base_url,
                "session": live_api.session,
                "headers": AUTH,
            },
        )
    finally:
        changed = case.method.upper() in MUTATING and case.path.startswith(JOB_PATH)
        if changed and response.status_code < 300:
            live_api.restore_jobs()


def test_the_served_document_is_the_one_under_test(live_api: Api) -> None:
    served = live_api.request("GET", "/api/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT
