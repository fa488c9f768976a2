"""Which OSErrors mean "the database is unavailable" (service/errors.py)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.db import create_engine
from service.errors import database_unavailable


def test_an_os_error_outside_the_driver_is_no_database_outage(tmp_path):
    """A time zone naming a tzdata directory raised IsADirectoryError, answered as a 503."""
    with pytest.raises(IsADirectoryError) as caught:
        tmp_path.read_text()
    assert not database_unavailable(caught.value)
    assert not database_unavailable(OSError("never raised"))


async def test_a_refused_connection_is_a_database_outage():
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/x")
    try:
        with pytest.raises(ConnectionRefusedError) as caught:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert database_unavailable(caught.value)
