"""The control API under generated input of every kind (schemathesis builds requests from
the API's own OpenAPI document, valid and invalid, and they are sent to the live server):
every answer is a success or a 4xx with a JSON error, never a 500 or a crash; the
server still answers afterwards. Wrong or missing tokens are in test_api.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_rig import LiveApi, live_api
from lifecycle_helpers import model

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with live_api(tmp, model("a", vram_mib=2000.0), model("b", vram_mib=4000.0)) as api:
        yield api


def operations(live: LiveApi) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json",
                                           headers={"Authorization": f"Bearer {live.token}"})
    found = [result.ok() for result in schema.get_all_operations()]
    return [op for op in found if op.path != "/api/v1/events"]  # endless: tested on its own


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_no_input_gets_a_server_error(live: LiveApi, mode: schemathesis.GenerationMode
                                      ) -> None:
    ops = operations(live)
    assert len(ops) >= 12, [op.label for op in ops]  # every route is in the document
    strategy = st.one_of([op.as_strategy(generation_mode=mode) for op in ops])
    seen: set[int] = set()

    @given(case=strategy)
    @settings(max_examples=EXAMPLES_PER_OPERATION * len(ops), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def ask(case: schemathesis.Case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {live.token}"})
        seen.add(response.status_code)
        assert response.status_code < 500, (case.as_curl_command(), response.text)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert isinstance(error["message"], str) and error["message"], response.text

    ask()
    assert live.client.get("/livez").status_code == 200
    if mode == schemathesis.GenerationMode.NEGATIVE:
        assert seen & {404, 413, 422}, seen  # bad input was sent and refused
