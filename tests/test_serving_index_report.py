"""`GET /admin/model` and the start-up log say which index serves, why `auto` chose it, its
parameters and the recall@20 measured when it was built (a real `recsys serve` subprocess)."""
from __future__ import annotations

import httpx
import pytest

from support.local_server import LocalServer, redis_env
from support.sample_runs import synthetic_run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("budget_mb,kind", [(None, "ivf"), (8, "ivf_sq8")])
def test_admin_model_reports_the_chosen_index_its_parameters_and_recall(tmp_path, redis_server, budget_mb, kind):
    run = synthetic_run(tmp_path / "run", n_items=60_000, dim=64, n_users=2_000)  # above exact_max_items: IVF
    env = {**redis_env(redis_server), "RECSYS_REDIS_NAMESPACE": "test-index-report", "RECSYS_SERVE_LOG_DIR": str(tmp_path / "logs"),
           "RECSYS_SERVE_INDEX_DIR": str(tmp_path / "index")}
    if budget_mb is not None:  # 60k x 64 float32 lists need ~15 MiB, 8-bit ones ~4.3 MiB
        env["RECSYS_SERVE_INDEX_MEMORY_BUDGET_MB"] = str(budget_mb)
    with LocalServer(run, env=env, log_file=tmp_path / "server.log", startup_timeout_s=600) as server:
        models = httpx.get(server.url + "/admin/model", timeout=30).json()
    index = models[0]["index"]
    assert models[0]["index_kind"] == index["kind"] == kind
    assert index["nlist"] == 979 and set(index["search_params"]) == {"nprobe"} and 1 <= index["search_params"]["nprobe"] < 979
    assert index["recall_at_20"] >= index["target_recall"] == 0.95 and index["recall_queries"] == 300
    assert "exact_max_items" in index["reason"] and ("memory_budget_bytes" in index["reason"]) == (budget_mb is not None)
    log = (tmp_path / "server.log").read_text()
    assert f"{kind} index over 60000 items" in log and f"nprobe {index['search_params']['nprobe']}; recall@20" in log
