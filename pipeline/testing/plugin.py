"""The pytest plugin of `pipeline.testing` (registered by the package's `pytest11` entry point,
so installing the package is enough): the `pipelines` fixture.

`pipelines` is an `InProcessPipelines` open for one test. It asks for pytest-django's `db`
fixture (the test runs in a transaction that is rolled back), or for `transactional_db` when the
test asks for it or is marked `django_db(transaction=True)` (the worker then commits on its own
connections, through the group-commit writer, as in production)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from . import InProcessPipelines


def _wants_transactions(request: Any) -> bool:
    if "transactional_db" in request.fixturenames or "live_server" in request.fixturenames:
        return True
    marker = request.node.get_closest_marker("django_db")
    return bool(marker and (marker.kwargs.get("transaction") or (marker.args and marker.args[0])))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[Any]) -> None:
    """A test using `pipelines` uses the database: marked so before pytest-django decides, from
    the collected tests' markers and fixtures, which test databases to create."""
    for item in items:
        if "pipelines" in getattr(item, "fixturenames", ()) and item.get_closest_marker("django_db") is None:
            item.add_marker(pytest.mark.django_db)


@pytest.fixture
def pipelines(request: Any) -> Iterator["InProcessPipelines"]:
    """Emitted events' pipelines run in the test process; see `pipeline.testing`."""
    request.getfixturevalue("transactional_db" if _wants_transactions(request) else "db")
    from . import InProcessPipelines  # not at import: pytest loads plugins before Django is set up

    runner = InProcessPipelines()
    try:
        yield runner
    finally:
        runner.close()
