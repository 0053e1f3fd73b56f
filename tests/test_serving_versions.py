"""Model version switches: no failed request during a switch under load, the cache never serves
the old version after it, and a broken run directory is refused while the old version serves on."""
from __future__ import annotations

import asyncio
import random
import shutil
import time

import httpx
import pytest

from support.local_server import LocalServer, redis_url_of
from support.sample_runs import tiktok_mean_pool_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server):
    root = tmp_path_factory.mktemp("serving-versions")
    v1 = tiktok_mean_pool_run(root / "v1", model_version="tiktok-meanpool-v1")
    v2 = root / "v2"
    shutil.copytree(v1, v2)
    (v2 / "run.json").write_text((v1 / "run.json").read_text().replace("tiktok-meanpool-v1", "tiktok-meanpool-v2"))
    server_env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": "test-serving-versions",
                  "RECSYS_SERVE_LOG_DIR": str(root / "logs")}
    with LocalServer(v1, env=server_env, log_file=root / "server.log") as server:
        yield {"url": server.url, "v1": v1, "v2": v2, "root": root}


async def _load(url: str, stop: asyncio.Event, log: list[tuple[float, int, str | None]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        while not stop.is_set():
            user = str(random.randrange(50))
            started = time.monotonic()
            try:
                response = await client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                version = response.json().get("model_version") if response.status_code == 200 else None
                log.append((started, response.status_code, version))
            except httpx.HTTPError as err:
                log.append((started, 0, repr(err)))


async def _until(predicate, what: str, within_s: float = 120.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {within_s}s"
        await asyncio.sleep(0.02)


def test_switch_under_load_drops_nothing_and_never_mixes_versions(env):
    """Load runs before, during and after the switch: it switches once 30 requests were answered and
    stops once 30 requests that started after the switch were answered, however busy the machine."""
    async def scenario() -> tuple[list, float, dict]:
        log: list[tuple[float, int, str | None]] = []
        stop = asyncio.Event()
        workers = [asyncio.create_task(_load(env["url"], stop, log)) for _ in range(6)]
        await _until(lambda: len(log) >= 30, "30 requests before the switch")
        async with httpx.AsyncClient(base_url=env["url"], timeout=120) as admin:
            response = await admin.post("/admin/model", json={"run_dir": str(env["v2"])})
        switched_at = time.monotonic()
        await _until(lambda: sum(started > switched_at for started, _, _ in log) >= 30, "30 requests after it")
        stop.set()
        await asyncio.gather(*workers)
        return log, switched_at, response.json()

    log, switched_at, switched = asyncio.run(scenario())
    assert switched["previous_version"] == "tiktok-meanpool-v1"
    assert switched["model"]["model_version"] == "tiktok-meanpool-v2"
    assert {status for _, status, _ in log} == {200}, [e for e in log if e[1] != 200][:3]
    before = {v for started, _, v in log if started < switched_at}
    after = {v for started, _, v in log if started > switched_at}
    assert "tiktok-meanpool-v1" in before
    assert after == {"tiktok-meanpool-v2"}, "a cached v1 answer leaked after the switch"


@pytest.mark.parametrize("breakage", ["missing_encoder", "truncated_vectors", "not_a_dir"])
def test_a_broken_run_directory_is_refused_and_the_old_version_keeps_serving(env, breakage):
    bad = env["root"] / f"bad-{breakage}"
    if breakage != "not_a_dir":
        shutil.copytree(env["v1"], bad)
        if breakage == "missing_encoder":
            (bad / "user_encoder.pt").unlink()
        else:
            data = (bad / "item_vectors.npy").read_bytes()
            (bad / "item_vectors.npy").write_bytes(data[: len(data) // 2])
    with httpx.Client(base_url=env["url"], timeout=60) as client:
        serving_before = client.get("/admin/model").json()[0]["model_version"]
        response = client.post("/admin/model", json={"run_dir": str(bad)})
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_run_dir" and str(bad) in response.json()["message"]
        assert client.get("/admin/model").json()[0]["model_version"] == serving_before
        assert client.get("/v1/users/3/recommendations").json()["model_version"] == serving_before
