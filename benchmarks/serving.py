"""The prediction service against the model's own predict_proba and MLflow's scoring server, on
the same model version, in one run; then 20 alias moves under constant load.

Prints one JSON object:

* ``inprocess``: the loaded pipeline's ``predict_proba`` in this process (the floor), fed the
  model's input frame;
* ``service``: ``POST /predict`` of the prediction service (raw rows, bearer token);
* ``mlflow_serve``: ``mlflow models serve --env-manager local`` on ``models:/<name>/<version>``,
  ``POST /invocations`` (``dataframe_split`` of the model's input columns: MLflow's server knows
  nothing of the raw rows);

  each ``{"single": {"c1"|"c8"|"c32": {"p50_ms", "p99_ms", "rps", "failed"}}, "batch_1000":
  {"rows_per_s"}}`` (single-row requests at concurrency N for ``BENCH_SECONDS`` each, after a
  warm-up; inprocess runs N threads);
* ``ratio``: service rps / mlflow_serve rps at concurrency 8;
* ``swaps``: ``{"moves": 20, "failed_requests", "swap_s_p50", "swap_s_max"}``: the alias
  ``champion`` moved 20 times between two versions (deploys and rollbacks) while 8 clients send
  single rows without pause; a swap is the time from the alias move to the first answer from the
  new version; ``failed_requests`` counts every non-200 answer or error during the moves.

The load generator shares the machine with the servers, so it is made cheap and kept honest: aiohttp
on uvloop in one event loop (about 0.3 ms of CPU a request, httpx's asyncio client took 1.3-1.5 ms),
N keep-alive connections with one request in flight each, request bodies encoded once beforehand,
every answer read whole and parsed, this process's garbage collector frozen before measuring (a
collection of its own heap is not the server's latency). Every server gets the same generator.

Run: .venv/bin/python benchmarks/serving.py                 # a throwaway stack of its own
     .venv/bin/python benchmarks/serving.py --env-file .env # the running stack of .env
It trains two versions (weeks 2013-W01..W03, held out on W03 / W04) when the registry has
fewer than two. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

from benchstack import bench_stack, say  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
WARMUP_S = 1.0
CONCURRENCY = (1, 8, 32)
BATCH = 1000
MOVES = 20
SWAP_TIMEOUT_S = 60.0
ROWS_WEEK = "2013-W05"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(latencies: list[float], seconds: float, failed: int) -> dict[str, Any]:
    return {"p50_ms": round(_percentile(latencies, 0.5) * 1000, 3) if latencies else None,
            "p99_ms": round(_percentile(latencies, 0.99) * 1000, 3) if latencies else None,
            "rps": round(len(latencies) / seconds, 1), "failed": failed}


async def _drive(send: Callable[[int], Awaitable[bool]], concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` clients calling `send(i)` back to back for `seconds` (after a warm-up)."""
    latencies: list[float] = []
    failed = 0
    stop_at = time.monotonic() + WARMUP_S + seconds
    start_at = time.monotonic() + WARMUP_S

    async def client(worker: int) -> None:
        nonlocal failed
        i = worker
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            ok = await send(i)
            took = time.perf_counter() - t0
            if time.monotonic() >= start_at:
                if ok:
                    latencies.append(took)
                else:
                    failed += 1
            i += concurrency

    await asyncio.gather(*(client(w) for w in range(concurrency)))
    return _summary(latencies, seconds, failed)


def _threads(call: Callable[[int], None], concurrency: int, seconds: float) -> dict[str, Any]:
    """`concurrency` threads calling `call(i)` back to back (the in-process floor)."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + WARMUP_S + seconds
    start_at = time.monotonic() + WARMUP_S

    def worker(w: int) -> None:
        i, mine = w, []
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            call(i)
            took = time.perf_counter() - t0
            if time.monotonic() >= start_at:
                mine.append(took)
            i += concurrency
        with lock:
            latencies.extend(mine)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return _summary(latencies, seconds, 0)


# --- the rows --------------------------------------------------------------------------------
def rows() -> tuple[list[dict[str, Any]], Any]:
    """(raw JSON rows for /predict, the model-input frame of the same rows)."""
    from mlops.config import load_schema
    from mlops.data import make_features
    from mlops.serve_replay import request_bodies, week_rows
    from mlops.modeling import model_input

    schema = load_schema()
    raw = week_rows(ROWS_WEEK, schema)
    frame = model_input(make_features(raw, schema), schema)
    return request_bodies(raw, chunk=len(raw))[0]["rows"], frame


# --- the registry ----------------------------------------------------------------------------
def two_versions(env: dict[str, str]) -> tuple[str, str]:
    """Two registered versions (training them when the registry has fewer); the champion is
    the first."""
    os.environ.update(env)
    from mlops import registry
    from mlops.tracking import setup

    client = setup()
    from mlops import config

    found = sorted((int(v.version) for v in client.search_model_versions(f"name='{config.model_name()}'")))
    if len(found) < 2:
        from mlops.batches import landing_path
        from mlops.data import replay
        from mlops.preprocess import run_preprocess
        from mlops.train import train_model
        from mlops.validate import accept_batch, validate_batch

        say("training two versions (2013-W01..W04)")
        replay(until_week="2013-W04")
        for week in ("2013-W01", "2013-W02", "2013-W03", "2013-W04"):
            if landing_path(week).exists():
                validate_batch(landing_path(week))
                accept_batch(landing_path(week))
        run_preprocess()
        a = train_model(train_weeks="2013-W01..2013-W02", holdout_week="2013-W03")["version"]
        b = train_model(train_weeks="2013-W01..2013-W03", holdout_week="2013-W04")["version"]
        found = sorted({int(a), int(b), *found})
    first, second = str(found[-2]), str(found[-1])
    registry.set_champion(first, "benchmarks/serving.py: the measured version")
    return first, second


def move_alias(version: str) -> None:
    from mlops import config
    from mlops.tracking import setup

    setup().set_registered_model_alias(config.model_name(), "champion", version)


# --- the three servers -----------------------------------------------------------------------
def wait_version(url: str, version: str, timeout: float = SWAP_TIMEOUT_S) -> None:
    import httpx
    from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

    @retry(retry=retry_if_result(lambda ok: not ok), stop=stop_after_delay(timeout), wait=wait_fixed(0.5))
    def ready() -> bool:
        try:
            resp = httpx.get(f"{url}/health", timeout=5)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and str(resp.json().get("model_version")) == version

    ready()


def _session(headers: dict[str, str], connections: int = 64) -> Any:
    """An aiohttp client session: keep-alive connections, JSON bodies, ``headers`` on each request."""
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, force_close=False),
                                 headers={**headers, "Content-Type": "application/json"},
                                 timeout=aiohttp.ClientTimeout(total=30))


async def _post(session: Any, url: str, body: bytes) -> tuple[int, Any]:
    """(status, parsed JSON answer or None); (0, None) when the request failed."""
    import aiohttp
    import orjson

    try:
        async with session.post(url, data=body) as resp:
            raw = await resp.read()
            return resp.status, (orjson.loads(raw) if resp.status == 200 else None)
    except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
        return 0, None


def _run(coro_fn: Callable[[], Awaitable[Any]]) -> Any:
    """Run the load generator's coroutine on uvloop, this process's heap frozen for the GC."""
    import gc

    import uvloop

    gc.collect()
    gc.freeze()
    try:
        return uvloop.run(coro_fn())
    finally:
        gc.unfreeze()


def measure_http(url: str, path: str, headers: dict[str, str], single: Callable[[int], Any],
                 batch: Any, check: Callable[[Any], bool]) -> dict[str, Any]:
    """Single-row requests at each concurrency, then 1000-row requests."""
    import orjson

    bodies = [orjson.dumps(single(i)) for i in range(2000)]
    batch_body = orjson.dumps(batch)
    target = f"{url}{path}"

    async def run() -> dict[str, Any]:
        async with _session(headers) as session:
            async def send(i: int) -> bool:
                status, answer = await _post(session, target, bodies[i % len(bodies)])
                return status == 200 and check(answer)

            out: dict[str, Any] = {"single": {}}
            for n in CONCURRENCY:
                say(f"  {target}: single rows at concurrency {n}")
                out["single"][f"c{n}"] = await _drive(send, n, SECONDS)
            started, done = time.perf_counter(), 0
            while time.perf_counter() - started < SECONDS or done < 3:
                status, _ = await _post(session, target, batch_body)
                if status != 200:
                    raise RuntimeError(f"{target}: a {BATCH}-row request answered HTTP {status}")
                done += 1
            out["batch_1000"] = {"rows_per_s": round(done * BATCH / (time.perf_counter() - started), 1)}
            return out

    return _run(run)


def measure_inprocess(model: Any, frame: Any) -> dict[str, Any]:
    """The pipeline's predict_proba on one row (N threads) and on 1000 rows."""
    singles = [frame.iloc[[i]] for i in range(min(len(frame), 2000))]
    out: dict[str, Any] = {"single": {}}
    for n in CONCURRENCY:
        say(f"  in process: single rows, {n} thread(s)")
        out["single"][f"c{n}"] = _threads(lambda i: model.predict_proba(singles[i % len(singles)]), n, SECONDS)
    batch = frame.iloc[:BATCH]
    started, done = time.perf_counter(), 0
    while time.perf_counter() - started < SECONDS or done < 3:
        model.predict_proba(batch)
        done += 1
    out["batch_1000"] = {"rows_per_s": round(done * BATCH / (time.perf_counter() - started), 1)}
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_serve(version: str, env: dict[str, str]) -> Iterator[str]:
    """MLflow's scoring server on models:/<name>/<version> (a process of its own)."""
    import httpx
    from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

    from mlops import config

    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"mlflow-serve-{port}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "mlflow"), "models", "serve",
                             "-m", f"models:/{config.model_name()}/{version}",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            # its scoring server is `uvicorn` from the PATH: the venv's
                            env={**os.environ, **env,
                                 "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"},
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    @retry(retry=retry_if_result(lambda ok: not ok), stop=stop_after_delay(180), wait=wait_fixed(1))
    def ping() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited {proc.returncode}: see {log.name}")
        try:
            return httpx.get(f"{url}/ping", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        ping()
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


# --- swaps -----------------------------------------------------------------------------------
def measure_swaps(url: str, token: str, rows_: list[dict[str, Any]], versions: tuple[str, str]) -> dict[str, Any]:
    """20 alias moves under constant load (8 clients); swap = move -> first answer of the new
    version."""
    import orjson

    state: dict[str, Any] = {"failed": 0, "target": None, "moved_at": None, "seen_at": None}
    bodies = [orjson.dumps({"rows": [row]}) for row in rows_[:2000]]
    target_url = f"{url}/predict"

    async def run() -> list[float]:
        stop = asyncio.Event()
        swaps: list[float] = []
        async with _session({"Authorization": f"Bearer {token}"}) as session:
            async def load(worker: int) -> None:
                i = worker
                while not stop.is_set():
                    status, answer = await _post(session, target_url, bodies[i % len(bodies)])
                    now = time.monotonic()
                    if status != 200:
                        state["failed"] += 1
                    elif (state["target"] is not None and state["seen_at"] is None
                          and str(answer["model_version"]) == state["target"]):
                        state["seen_at"] = now
                    i += 8

            clients = [asyncio.create_task(load(w)) for w in range(8)]
            await asyncio.sleep(2)
            for move in range(MOVES):
                target = versions[(move + 1) % 2]
                state.update(target=None, seen_at=None)
                await asyncio.to_thread(move_alias, target)
                state.update(target=target, moved_at=time.monotonic())
                deadline = state["moved_at"] + SWAP_TIMEOUT_S
                while state["seen_at"] is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if state["seen_at"] is None:
                    raise RuntimeError(f"move {move + 1}: the service did not answer with version "
                                       f"{target} within {SWAP_TIMEOUT_S:.0f} s")
                swaps.append(state["seen_at"] - state["moved_at"])
                say(f"  move {move + 1}/{MOVES} to version {target}: {swaps[-1]:.2f} s")
            stop.set()
            await asyncio.gather(*clients)
        return swaps

    swaps = _run(run)
    return {"moves": MOVES, "failed_requests": state["failed"],
            "swap_s_p50": round(statistics.median(swaps), 3), "swap_s_max": round(max(swaps), 3)}


# --- main ------------------------------------------------------------------------------------
def run(cfg: Any) -> dict[str, Any]:
    from stack.demo_serving import serving_url

    pipeline = {"MLOPS_DATA_DIR": str(cfg.data_dir), "MLFLOW_TRACKING_URI": cfg.mlflow_url,
                "MLOPS_MODEL_NAME": cfg.env["MLOPS_MODEL_NAME"],
                "MLFLOW_TRACKING_USERNAME": cfg.env["MLFLOW_PIPELINE_USER"],
                "MLFLOW_TRACKING_PASSWORD": cfg.env["MLFLOW_PIPELINE_PASSWORD"]}
    os.environ.pop("MLOPS_PUSHGATEWAY_URL", None)
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints run links: stdout is for the JSON
        versions = two_versions(pipeline)
    url, token = serving_url(cfg), cfg.env["SERVING_TOKEN"]
    say(f"waiting for {url} to serve version {versions[0]}")
    wait_version(url, versions[0])
    raw_rows, frame = rows()
    from mlops.evaluate import load_version

    result: dict[str, Any] = {"version": versions[0], "rows_week": ROWS_WEEK, "seconds_per_level": SECONDS}
    say("in process")
    result["inprocess"] = measure_inprocess(load_version(versions[0]), frame)
    say("the prediction service")
    auth = {"Authorization": f"Bearer {token}"}
    result["service"] = measure_http(
        url, "/predict", auth, lambda i: {"rows": [raw_rows[i % len(raw_rows)]]},
        {"rows": raw_rows[:BATCH]}, lambda body: str(body["model_version"]) == versions[0])
    say("mlflow models serve")
    columns = list(frame.columns)
    records = json.loads(frame.to_json(orient="values"))  # NaN -> null
    viewer = {**pipeline, "MLFLOW_TRACKING_USERNAME": cfg.env["MLFLOW_VIEWER_USER"],
              "MLFLOW_TRACKING_PASSWORD": cfg.env["MLFLOW_VIEWER_PASSWORD"]}
    with mlflow_serve(versions[0], viewer) as anchor:
        result["mlflow_serve"] = measure_http(
            anchor, "/invocations", {},
            lambda i: {"dataframe_split": {"columns": columns, "data": [records[i % len(records)]]}},
            {"dataframe_split": {"columns": columns, "data": records[:BATCH]}},
            lambda body: "predictions" in body)
    service_rps = result["service"]["single"]["c8"]["rps"]
    anchor_rps = result["mlflow_serve"]["single"]["c8"]["rps"]
    result["ratio"] = round(service_rps / anchor_rps, 2) if anchor_rps else None
    say(f"{MOVES} alias moves under load")
    result["swaps"] = measure_swaps(url, token, raw_rows, versions)
    move_alias(versions[0])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", help="measure the running stack of this env file "
                                           "(default: bring up a throwaway stack)")
    args = parser.parse_args()
    if args.env_file:
        from stack.config import load

        result = run(load(Path(args.env_file)))
    else:
        # benchstack's ports shifted by 500 (never a developer's SERVING_PORT 8000 nor a test stack's)
        port = str(28000 + 500 + int(os.environ.get("MLOPS_BENCH_PORT_OFFSET", "0")))
        with bench_stack("serving", {"SERVING_PORT": port}) as (_, cfg, took):
            result = {**run(cfg), "stack_up_s": round(took, 1)}
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
