"""The S3 source's pure part (service/scanner/sources/s3.py): one ListObjectsV2 page, as botocore
parses it, into a listing's entries and details; keys kept as data."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from service.scanner.sources.base import Listing
from service.scanner.sources.local import _matcher
from service.scanner.sources.s3 import add_objects, drop_collisions, stored_path

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
WHEN_US = (WHEN - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def item(key: str, size: int = 1, **extra: Any) -> dict[str, Any]:
    return {"Key": key, "Size": size, "LastModified": WHEN, "ETag": '"abc123"',
            "StorageClass": "STANDARD", **extra}  # fmt: skip


def page(objects: list[dict[str, Any]], prefix: str = "", pattern: str = "*",
         exclude: tuple[str, ...] = ()) -> Listing:  # fmt: skip
    listing = Listing()
    add_objects(listing, objects, len(prefix), _matcher(pattern, exclude), {})
    return listing


def test_an_object_is_its_key_below_the_prefix_size_time_and_etag() -> None:
    listing = page([item("db/a.sql.gz", 42)], prefix="db/")
    assert listing.entries == [("a.sql.gz", 42, WHEN_US)]
    assert listing.details == {"a.sql.gz": {"etag": "abc123", "storage_class": "STANDARD"}}


def test_times_keep_their_milliseconds_in_any_zone() -> None:
    paris = WHEN.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    listing = page([item("a", LastModified=paris)])
    assert listing.entries[0][2] == WHEN_US
    assert WHEN_US % 1_000_000 == 678_000


def test_missing_etag_or_storage_class_are_none() -> None:
    bare = {"Key": "a", "Size": 0, "LastModified": WHEN}
    assert page([bare]).details == {"a": {"etag": None, "storage_class": None}}


def test_pattern_and_exclude_see_the_name_after_the_last_slash() -> None:
    objects = [item(k) for k in ("x/dump.sql", "x/dump.sql.tmp", "x/.dot.sql", "sql/x.txt")]
    listing = page(objects, pattern="*.sql", exclude=("*.tmp", ".*"))
    assert [e[0] for e in listing.entries] == ["x/dump.sql"]


def test_folder_placeholders_are_skipped_and_the_prefix_itself_silently() -> None:
    listing = page([item("db/"), item("db/sub/"), item("db/a")], prefix="db/")
    assert [e[0] for e in listing.entries] == ["a"]
    assert listing.skipped == ["sub/: a folder placeholder, not an object"]


def test_odd_keys_are_kept_as_given() -> None:
    keys = ["../../etc/passwd", "a//b", "a/./b", "line\nbreak", "tab\there", "ünï cödé ß", "😀"]
    listing = page([item(k) for k in keys], exclude=())
    assert [e[0] for e in listing.entries] == keys
    assert set(listing.details) == set(keys)


def test_what_cannot_be_stored_is_escaped_and_collisions_dropped() -> None:
    assert stored_path("a\0b") == "a\\x00b"
    assert stored_path("lone\udcffsurrogate") == "lone\\udcffsurrogate"
    assert stored_path("plain ü") == "plain ü"
    listing = page([item("a\0b", 1), item("a\\x00b", 2)])
    drop_collisions(listing)
    assert listing.entries == [("a\\x00b", 1, WHEN_US)]
    assert listing.skipped == ["a\\x00b: two objects show as this key; one is ignored"]


def test_storage_class_names_are_shared() -> None:
    listing = Listing()
    classes: dict[str, str] = {}
    first, second = "".join(["STAN", "DARD"]), "".join(["STA", "NDARD"])
    assert first is not second
    add_objects(listing, [item("a", StorageClass=first), item("b", StorageClass=second)], 0,
                _matcher("*", ()), classes)  # fmt: skip
    assert listing.details["a"]["storage_class"] is listing.details["b"]["storage_class"]


def test_the_module_does_not_import_botocore() -> None:
    """botocore costs ~1.5 s: open_source and this module load it only when a listing runs."""
    probe = (
        "import sys; import service.scanner.sources.s3; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'aiobotocore')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_details_are_plain_json_ready_dicts_and_small() -> None:
    import json
    import tracemalloc

    objects = [item(f"k{n}", ETag=f'"{n:032x}"') for n in range(2000)]
    tracemalloc.start()
    listing = page(objects)
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    details = listing.details["k7"]
    assert type(details) is dict
    assert json.loads(json.dumps(details)) == {"etag": f"{7:032x}", "storage_class": "STANDARD"}
    # entries, paths, times, details and etags: ~310 bytes an object (~395 with plain dicts)
    assert used / len(objects) < 350, used / len(objects)


def test_errors_of_a_read_name_the_object_and_the_permission_it_needs():
    from botocore.exceptions import ClientError

    from service.core.jobspec import S3Source
    from service.scanner.sources.s3 import S3Listing

    listing = S3Listing(S3Source.model_validate({"type": "s3", "bucket": "backups",
                                                 "prefix": "db/"}))  # fmt: skip

    def error(code: str, status: int) -> ClientError:
        answer: Any = {"Error": {"Code": code, "Message": "no"},
                       "ResponseMetadata": {"HTTPStatusCode": status}}  # fmt: skip
        return ClientError(answer, "GetObject")

    denied = error("AccessDenied", 403)
    assert "may not list the bucket; check that they allow s3:ListBucket on backups" in (
        listing.explain(denied)
    )
    assert "may not read db/a.gz; check that they allow s3:GetObject on backups/db/a.gz" in (
        listing.explain(denied, key="db/a.gz")
    )
    gone = listing.explain(error("NoSuchKey", 404), key="db/a.gz")
    assert gone == "bucket backups at AWS S3: object db/a.gz is gone (deleted since it was listed)"
    assert listing.key("a.gz") == "db/a.gz"
