"""moto's S3 server, run as its own process by the `s3_server` fixture (tests/peers.py):
`python tests/moto_peer.py` binds a free loopback port and prints, on its first line, JSON:
{"port", "access_key_id", "secret_access_key"}.

Credentials are checked (moto's INITIAL_NO_AUTH_ACTION_COUNT = 0): an IAM user made at start
with an allow-everything policy owns the printed key; any other key id is refused
(InvalidAccessKeyId), a wrong secret too (SignatureDoesNotMatch).

It serves moto's own WSGI application (what `python -m moto.server` serves), plus one route
of ours for seeding, because moto takes ~12 ms per PutObject here (2 500 keys: 30 s) but
0.1 ms in-process:

    POST /_peer/objects  {"bucket": NAME, "objects": [{"key": K, "size": N | "body": TEXT,
                          "last_modified": ISO-8601 (optional; aware)}]}

creates the bucket if missing and puts the objects with moto's backend directly; a
`last_modified` sets the object's LastModified (moto otherwise stamps the time of the put).
Everything else reaches moto unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from moto import settings
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.iam.models import iam_backends
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

SEED = "/_peer/objects"


def seed(request: dict[str, Any]) -> int:
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    bucket = request["bucket"]
    if bucket not in backend.buckets:
        backend.create_bucket(bucket, request.get("region", "us-east-1"))
    for item in request["objects"]:
        body = item["body"].encode() if "body" in item else bytes(item["size"])
        key = backend.put_object(bucket, item["key"], body)
        if item.get("last_modified"):
            moment = datetime.fromisoformat(item["last_modified"])
            key.last_modified = moment.astimezone(UTC).replace(tzinfo=None)
    return len(request["objects"])


def application(moto: Any) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == SEED and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            count = seed(json.loads(environ["wsgi.input"].read(length)))
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"objects": count}).encode()]
        result: Iterable[bytes] = moto(environ, start_response)
        return result

    return app


ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def main() -> None:
    iam = iam_backends[DEFAULT_ACCOUNT_ID]["aws"]
    iam.create_user("us-east-1", "backup-monitor")
    iam.put_user_policy("backup-monitor", "all", ALLOW_ALL)
    key = iam.create_access_key("backup-monitor")
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    moto = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, application(moto), threaded=True)
    started = {
        "port": server.port,
        "access_key_id": key.access_key_id,
        "secret_access_key": key.secret_access_key,
    }
    print(json.dumps(started), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
