"""Many browser sessions moving the Sliders page's sliders at once, optionally while a run trains.

Starts `streamlit run app.py` on 127.0.0.1 (runs in a temporary VAE_RUNS_DIR), optionally one training
run through `vae_core.jobs.start_run` (MNIST, 784-400-2 mlp, stopped at the end), then for each session
count drives that many Chromium contexts (one browser, Debian's /usr/bin/chromium, never a download).
Each session opens the Sliders page at a z of its own and presses PageUp / PageDown on a slider thumb
at most `--rate` times a second; a move's latency is from the keydown (the page's clock) to the moment
the decoded image's src changes (a MutationObserver's timestamp), so it includes Streamlit's frontend,
the websocket, the fragment rerun and the browser's rendering, as a user sees it.

Prints, per session count: moves, p50 / p95 / max in milliseconds, errors (exceptions shown on the page,
console errors, page errors, moves whose image never changed), whether each session still shows its own
z (no state leaked between sessions), and the load average (`os.getloadavg`), since the machine may be
shared. Everything is bounded (`--seconds` per session count, `--moves` per session) and every process
it started is stopped in `finally`.

    python bench/concurrency.py [--sessions 1,8] [--seconds 60] [--rate 1] [--no-train]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vae_core import jobs  # noqa: E402
from vae_core.spec import RunSpec  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IMAGE = "[data-testid=stMain] [data-testid=stImage] img"
THUMB = "[data-testid=stMain] [data-testid=stSlider] input[type=range]"
CODE = "[data-testid=stMain] [data-testid=stCode] code"
START_TIMEOUT_S = 90  # the server's start and a session's first page (cold caches, a busy machine)
MOVE_TIMEOUT_S = 20  # a move whose image has not changed by then counts as an error
PROBES = ("/_stcore/health", "/_stcore/host-config")  # see console_error
STOP_TIMEOUT_S = 20  # the trainer's last step and checkpoint after SIGTERM

# Records, in the page's own clock, each keydown and each change of the decoded image's src.
OBSERVER = """() => {
  window.__keys = []; window.__srcs = [];
  document.addEventListener('keydown', () => window.__keys.push(performance.now()), true);
  new MutationObserver(records => {
    for (const r of records) {
      const img = r.type === 'attributes' ? r.target : null;
      if (img && img.matches && img.matches(SELECTOR)) window.__srcs.push([performance.now(), img.src]);
      for (const n of r.addedNodes || []) {
        const found = n.querySelectorAll ? [n, ...n.querySelectorAll('img')] : [];
        for (const el of found)
          if (el.matches && el.matches(SELECTOR)) window.__srcs.push([performance.now(), el.src]);
      }
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}""".replace("SELECTOR", repr(IMAGE))


@dataclass
class Session:
    """What one browser session saw."""

    index: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    z_slider: list[float] = field(default_factory=list)  # its sliders at the end
    z_shown: str = ""  # the z its page printed at the end


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, runs: Path, log: Path) -> subprocess.Popen:
    """`streamlit run app.py` on 127.0.0.1:port, healthy (UMAP's warm-up skipped: it is the steady state)."""
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"]  # fmt: skip
    env = {**os.environ, "VAE_RUNS_DIR": str(runs), "VAE_WARM_UP_UMAP": "0"}
    process = subprocess.Popen(command, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start; see {log}") from None
            time.sleep(0.3)


def start_training(runs: Path, epochs: int) -> jobs.Run:
    """One run as the Train page starts it: MNIST, a 784-400-2 mlp, one trainer thread."""
    spec = RunSpec().with_values(
        {"data": {"name": "mnist"}, "model": {"arch": "mlp", "hidden": [400], "latent_dim": 2},
         "train": {"epochs": epochs}}
    )  # fmt: skip
    return jobs.start_run("bench-load", spec, runs)


def stop_training(run: jobs.Run) -> None:
    try:
        jobs.stop_run(run)
    except jobs.RunError:
        return  # it has ended already
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while jobs.read_run(run.path).status is jobs.Status.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
    if jobs.read_run(run.path).status is jobs.Status.RUNNING:
        os.killpg(run.pid, signal.SIGKILL)  # the trainer runs in a session (and group) of its own


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------- one session


def start_z(index: int) -> tuple[float, float]:
    """A distinct starting point per session, so that a leak between sessions would show."""
    return round(-2.0 + 0.37 * index, 2), round(1.5 - 0.23 * index, 2)


async def drive(browser, base: str, index: int, seconds: float, moves: int, rate: float) -> Session:
    """Open the Sliders page in a context of its own and move its sliders until time or moves run out."""
    session = Session(index)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.on("console", lambda m: console_error(m, session))
    page.on("pageerror", lambda e: session.errors.append(f"page error: {str(e)[:200]}"))
    try:
        z0 = start_z(index)
        url = f"{base}/Sliders?ckpt=checkpoints%2Fmnist-2d&z={z0[0]:.2f}%2C{z0[1]:.2f}"
        await page.goto(url, timeout=START_TIMEOUT_S * 1000)
        await page.locator(IMAGE).first.wait_for(timeout=START_TIMEOUT_S * 1000)
        await page.wait_for_timeout(500)
        await page.evaluate(OBSERVER)
        rng = random.Random(index)
        thumbs = page.locator(THUMB)
        end = time.monotonic() + seconds
        for move in range(moves):
            if time.monotonic() >= end:
                break
            started = time.monotonic()
            await one_move(page, thumbs.nth(move % 2), rng.choice(["PageUp", "PageDown"]), session)
            await asyncio.sleep(max(0.0, 1.0 / rate - (time.monotonic() - started)))
        await page.wait_for_timeout(1000)  # let the last rerun land before reading the final state
        if await page.locator(".stException").count():
            session.errors.append("exception shown on the page")
        values = await thumbs.evaluate_all("ts => ts.map(t => Number(t.value))")
        session.z_slider = values
        session.z_shown = (await page.locator(CODE).first.text_content() or "").strip()
    except Exception as e:  # a benchmark reports what went wrong and carries on
        session.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
    finally:
        await context.close()
    return session


def console_error(message, session: Session) -> None:
    """Count a console error, except the frontend probing /PAGE/_stcore/... before the server's root on a
    deep link (a Streamlit quirk, answered 404 and then retried at the root)."""
    url = message.location.get("url", "")
    if message.type == "error" and not url.endswith(PROBES):
        session.errors.append(f"console: {message.text[:120]} {url[-60:]}")


async def one_move(page, thumb, key: str, session: Session) -> None:
    """Press a key on a thumb; record keydown → new src, or an error if the image never changes."""
    before = await page.locator(IMAGE).first.get_attribute("src")
    value = await thumb.input_value()
    await thumb.press(key)
    if await thumb.input_value() == value:
        return  # at the end of the range: nothing changed, nothing to wait for
    try:
        await page.wait_for_function(
            f"src => document.querySelector({IMAGE!r}).src !== src", arg=before, timeout=MOVE_TIMEOUT_S * 1000
        )
    except Exception:
        session.errors.append(f"timeout: no new image {MOVE_TIMEOUT_S} s after {key}")
        return
    keys, srcs = await page.evaluate("() => [window.__keys.slice(-1)[0], window.__srcs]")
    after = [t for t, src in srcs if t >= keys and src != before]
    if after:
        session.latencies_ms.append(after[0] - keys)


# ---------------------------------------------------------------- a session count


def own_z(session: Session) -> bool:
    """Whether a session's page shows the z its own sliders hold."""
    shown = session.z_shown.removeprefix("z = [").removesuffix("]")
    try:
        z = [float(v) for v in shown.split(",")]
    except ValueError:
        return False
    return len(z) == len(session.z_slider) and np.allclose(z, session.z_slider, atol=0.006)


async def measure(base: str, n: int, seconds: float, moves: int, rate: float) -> list[Session]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            return await asyncio.gather(*(drive(browser, base, i, seconds, moves, rate) for i in range(n)))
        finally:
            await browser.close()


def report(n: int, sessions: list[Session], load: tuple[float, float, float]) -> None:
    latencies = np.array([t for s in sessions for t in s.latencies_ms])
    errors = [e for s in sessions for e in s.errors]
    leaked = [s.index for s in sessions if not own_z(s)]
    distinct = len({tuple(s.z_slider) for s in sessions}) == len(sessions)
    if len(latencies):
        p50, p95, worst = np.percentile(latencies, 50), np.percentile(latencies, 95), latencies.max()
        timing = f"p50 {p50:6.0f} ms  p95 {p95:6.0f} ms  max {worst:6.0f} ms"
    else:
        timing = "no completed moves"
    print(
        f"{n:2d} session(s): {len(latencies):4d} moves  {timing}  errors {len(errors)}  "
        f"own z {'yes' if not leaked and distinct else f'NO (sessions {leaked}, distinct {distinct})'}  "
        f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    for error in sorted(set(errors))[:10]:
        print(f"    {errors.count(error)} × {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,8", help="session counts to measure, e.g. 1,8")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of moves per session count")
    parser.add_argument("--moves", type=int, default=300, help="at most this many moves per session")
    parser.add_argument("--rate", type=float, default=1.0, help="most moves a second, per session")
    parser.add_argument("--no-train", dest="train", action="store_false", help="no run training meanwhile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary runs folder and server log")
    args = parser.parse_args()
    counts = [int(n) for n in args.sessions.split(",")]
    if not Path(CHROMIUM).is_file():
        sys.exit(f"error: needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")

    tmp = Path(tempfile.mkdtemp(prefix="vae-concurrency-"))
    server = run = None
    try:
        port = free_port()
        server = start_server(port, tmp / "runs", tmp / "server.log")
        if args.train:
            epochs = max(2, int(sum(counts) * args.seconds))  # far more than the bench lasts: it is stopped
            run = start_training(tmp / "runs", epochs)
            print(f"training {run.name} (pid {run.pid}) meanwhile", flush=True)
        for n in counts:
            before = os.getloadavg()
            base = f"http://127.0.0.1:{port}"
            sessions = asyncio.run(measure(base, n, args.seconds, args.moves, args.rate))
            report(n, sessions, tuple(max(a, b) for a, b in zip(before, os.getloadavg(), strict=True)))
    finally:
        if run is not None:
            stop_training(run)
        if server is not None:
            stop_server(server)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
