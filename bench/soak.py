"""Soak: mixed load on the embedded default, with NATS and PostgreSQL killed under it.

    .venv/bin/python bench/soak.py [--minutes 20] [--clients 4] [--rate 1.0]
                                   [--nats-kills 2] [--postgres-kills 1] [--seed 7]
                                   [--upload-share 0.2]
                                   [--dataset ../shared/data/scifact] [--out soak.json]

1. starts a local server speaking the OpenAI protocol (the test suite's fake: it answers
   at once) and ``kf serve`` on a fresh data directory (embedded PostgreSQL and NATS),
   with that server as the default model; uploads 50 SciFact abstracts and waits until
   they are embedded;
2. runs ``--clients`` clients for ``--minutes``, each at ``--rate`` requests a second
   (steady: a client that falls behind does not burst to catch up), each request drawn
   at random: a search (50%: hybrid, vector, keyword or exact), a question in a new
   conversation (30%), an upload of a new small document (20%; ``--upload-share``: 0
   keeps the library as seeded, to tell memory that grows with it from other growth);
3. at random moments (spread over the middle 80% of the run, at least two minutes
   apart) SIGKILLs the embedded ``nats-server`` ``--nats-kills`` times and the
   PostgreSQL postmaster ``--postgres-kills`` times, as an operator would see them die;
   after each, measures the time until ``/health/ready`` answers 200 again and until a
   document uploaded just after the kill is embedded;
4. stops the load, waits (up to five minutes) for every accepted upload to reach a final
   state and the read models to catch up, and reports:
   - requests by kind and status code, with p50/p95 latency;
   - errors other than a 503 during an outage (an outage: from a kill until ready again,
     plus five seconds), and transport errors; aim: none;
   - documents lost (accepted, then unknown) or stuck (not final); aim: none;
   - time to recover after each fault;
   - memory of each process a minute into the load (warm, before any fault) and at its
     end (RSS; PostgreSQL as the proportional set size of all its processes, since its
     backends share memory; a killed server is compared with nothing, its successor is
     listed apart); aim: no growth beyond 10%.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, pct, start_serve

from tests.fakes.llm_servers import start as start_fake_server

MODEL = "instant"
FINAL = {"embedded", "failed"}
MODES = ("hybrid", "vector", "keyword", "exact")
SEED_DOCS = 50


def config(path: Path, provider_url: str) -> Path:
    settings = {
        "llm": {
            "default_model": MODEL,
            "providers": [
                {"name": "instant", "kind": "openai_compatible", "base_url": provider_url}
            ],
            "routes": [{"pattern": MODEL, "provider": "instant"}],
            "prices": {MODEL: {"input_per_million": 1, "output_per_million": 2}},
        }
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


# ------------------------------------------------------------------ records


@dataclass
class Outage:
    kind: str  # "nats" or "postgres"
    killed_at: float  # monotonic
    pid: int
    ready_after_s: float | None = None
    embedded_after_s: float | None = None
    ends_at: float | None = None  # ready again, plus a grace period


@dataclass
class Record:
    kind: str
    at: float  # monotonic, when sent
    status: int  # 0: no answer (transport error)
    ms: float
    error: str = ""


@dataclass
class Run:
    records: list[Record] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # document ids, 202
    outages: list[Outage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: Record, document_id: str | None = None) -> None:
        with self.lock:
            self.records.append(record)
            if document_id:
                self.accepted.append(document_id)


# ---------------------------------------------------------------- processes


def nats_process(data_dir: Path) -> psutil.Process:
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "nats-server" in cmdline and str(data_dir.resolve()) in cmdline:
            return process
    raise SystemExit("no embedded nats-server")


def postmaster(data_dir: Path) -> psutil.Process:
    pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def _role(process: psutil.Process) -> str:
    args = process.cmdline()
    if "config.cli" in args:
        rest = args[args.index("config.cli") + 1 :]
        return "kf " + (rest[0] if rest else "?")
    if "-c" in args:  # multiprocessing's helpers: name them by what they run
        code = args[args.index("-c") + 1] if len(args) > args.index("-c") + 1 else ""
        return f"{process.name()} ({code.split('import')[-1].split(';')[0].strip()[:24]})"
    return process.name()


def memory(serve: psutil.Process, data_dir: Path) -> dict[str, float]:
    """MB per process: kf serve and its children (RSS; workers numbered), NATS (RSS),
    PostgreSQL (PSS summed over the postmaster and its backends); the servers named with
    their pid, so that one killed and its successor are compared with nothing."""
    found: dict[str, float] = {}
    counts: Counter[str] = Counter()
    for process in [serve, *serve.children(recursive=True)]:
        try:
            role = _role(process)
            rss = process.memory_info().rss / 2**20
        except psutil.Error:
            continue
        if role == "nats-server":
            continue  # below, by its pid
        counts[role] += 1
        found[f"{role} #{counts[role]}" if role == "kf worker" else role] = rss
    with contextlib.suppress(SystemExit, psutil.Error):
        nats = nats_process(data_dir)
        found[f"nats-server (pid {nats.pid})"] = nats.memory_info().rss / 2**20
    try:
        master = postmaster(data_dir)
        pss = 0.0
        for process in [master, *master.children(recursive=True)]:
            try:
                pss += process.memory_full_info().pss / 2**20
            except psutil.Error:
                continue
        found[f"postgres, all (pid {master.pid})"] = pss
    except (OSError, ValueError, psutil.Error):
        pass
    return found


# ------------------------------------------------------------------- load


class Client(threading.Thread):
    def __init__(
        self, number: int, url: str, key: str, rate: float, until: float, run: Run,
        texts: list[str], queries: list[str], seed: int, upload_share: float,
    ) -> None:  # fmt: skip
        super().__init__(name=f"client-{number}", daemon=True)
        self.number = number
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        self.rate = rate
        self.until = until
        self.run_ = run
        self.texts = texts
        self.queries = queries
        self.random = random.Random(seed * 1000 + number)
        self.uploads = 0
        # Of the requests; the rest are searches and questions, 5 to 3.
        self.upload_share = upload_share

    def run(self) -> None:
        interval = 1.0 / self.rate
        due = time.monotonic() + self.random.random() * interval
        while True:
            now = time.monotonic()
            if now >= self.until:
                break
            if due > now:
                time.sleep(due - now)
            due = max(due + interval, time.monotonic())  # steady: no bursts after a stall
            draw = self.random.random()
            if draw < self.upload_share:
                self.upload()
            elif draw < self.upload_share + (1 - self.upload_share) * 5 / 8:
                self.search()
            else:
                self.ask()
        self.http.close()

    def _send(self, kind: str, method: str, path: str, **kwargs: object) -> httpx.Response | None:
        started = time.monotonic()
        try:
            response = self.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            self.run_.add(Record(kind, started, 0, (time.monotonic() - started) * 1000, repr(exc)))
            return None
        ms = (time.monotonic() - started) * 1000
        error = "" if response.status_code < 400 else response.text[:300]
        document_id = None
        if kind == "upload" and response.status_code == 202:
            document_id = response.json()["id"]
        self.run_.add(Record(kind, started, response.status_code, ms, error), document_id)
        return response

    def search(self) -> None:
        query = self.random.choice(self.queries)
        mode = self.random.choice(MODES)
        self._send("search", "GET", "/v1/search", params={"q": query, "mode": mode, "k": 10})

    def ask(self) -> None:
        conversation = self._send("conversation", "POST", "/v1/conversations", json={})
        if conversation is None or conversation.status_code != 201:
            return
        question = self.random.choice(self.queries)
        self._send(
            "question",
            "POST",
            f"/v1/conversations/{conversation.json()['id']}/questions",
            json={"question": question, "model": MODEL},
        )

    def upload(self) -> None:
        self.uploads += 1
        name = f"soak-{self.number}-{self.uploads}.txt"
        body = f"{name}\n\n{self.random.choice(self.texts)}"
        self._send("upload", "POST", "/v1/documents", files={"file": (name, body.encode())})


# ------------------------------------------------------------------ faults


def schedule(args: argparse.Namespace, started: float, duration: float) -> list[tuple[float, str]]:
    """Kill times over the middle 80% of the run, at least two minutes apart (when the
    run is long enough; otherwise evenly spread)."""
    kinds = ["nats"] * args.nats_kills + ["postgres"] * args.postgres_kills
    rng = random.Random(args.seed)
    rng.shuffle(kinds)
    low, high = started + 0.1 * duration, started + 0.9 * duration
    gap = min(120.0, (high - low) / max(len(kinds), 1))
    for _ in range(10_000):
        times = sorted(rng.uniform(low, high) for _ in kinds)
        if all(b - a >= gap for a, b in itertools.pairwise(times)):
            return list(zip(times, kinds, strict=True))
    step = (high - low) / (len(kinds) + 1)
    return [(low + step * (i + 1), kind) for i, kind in enumerate(kinds)]


def kill(kind: str, data_dir: Path) -> int:
    process = nats_process(data_dir) if kind == "nats" else postmaster(data_dir)
    os.kill(process.pid, signal.SIGKILL)
    return process.pid


def recover(outage: Outage, url: str, key: str) -> None:
    """Time until ready again, and until a document uploaded after the kill is embedded."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
        time.sleep(0.2)
        while outage.ready_after_s is None:
            try:
                if http.get("/health/ready").status_code == 200:
                    outage.ready_after_s = time.monotonic() - outage.killed_at
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        outage.ends_at = time.monotonic() + 5.0
        probe = f"probe after the {outage.kind} kill at {outage.killed_at:.3f}".encode()
        document_id = None
        while document_id is None and time.monotonic() - outage.killed_at < 600:
            try:
                answered = http.post("/v1/documents", files={"file": ("probe.txt", probe)})
                if answered.status_code == 202:
                    document_id = answered.json()["id"]
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        while document_id and time.monotonic() - outage.killed_at < 600:
            try:
                status = http.get(f"/v1/documents/{document_id}").json().get("status")
                if status in FINAL:
                    outage.embedded_after_s = time.monotonic() - outage.killed_at
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.25)


def inject(
    plan: list[tuple[float, str]], data_dir: Path, url: str, key: str, run: Run
) -> threading.Thread:
    def go() -> None:
        for at, kind in plan:
            time.sleep(max(0.0, at - time.monotonic()))
            pid = kill(kind, data_dir)
            outage = Outage(kind, time.monotonic(), pid)
            with run.lock:
                run.outages.append(outage)
            print(f"  {time.strftime('%H:%M:%S')} killed {kind} (pid {pid})", flush=True)
            recover(outage, url, key)
            print(
                f"  {time.strftime('%H:%M:%S')} {kind}: ready after {outage.ready_after_s:.1f} s,"
                f" a new upload embedded after {outage.embedded_after_s or float('nan'):.1f} s",
                flush=True,
            )

    thread = threading.Thread(target=go, name="faults", daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------------------ checks


def seed(http: httpx.Client, texts: list[str]) -> None:
    ids = []
    for i, text in enumerate(texts[:SEED_DOCS]):
        answered = http.post("/v1/documents", files={"file": (f"seed-{i}.txt", text.encode())})
        answered.raise_for_status()
        ids.append(answered.json()["id"])
    final = settle(http, ids, 300)
    if any(final.get(i) != "embedded" for i in ids):
        raise SystemExit(f"the seed documents did not all embed: {Counter(final.values())}")


def settle(http: httpx.Client, ids: list[str], timeout: float) -> dict[str, str]:
    """Each document's status once all are final (or at the timeout); 'lost' if unknown."""
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for document_id in pending:
            try:
                answered = http.get(f"/v1/documents/{document_id}")
            except httpx.HTTPError:
                still.append(document_id)
                continue
            if answered.status_code == 404:
                statuses[document_id] = "lost"
            elif answered.status_code == 200:
                statuses[document_id] = answered.json()["status"]
                if statuses[document_id] not in FINAL:
                    still.append(document_id)
            else:
                still.append(document_id)
        pending = still
        if pending:
            time.sleep(1)
    for document_id in pending:
        statuses.setdefault(document_id, "unanswered")
    return statuses


def in_outage(record: Record, outages: list[Outage]) -> bool:
    return any(o.killed_at - 1.0 <= record.at <= (o.ends_at or float("inf")) for o in outages)


def report(run: Run, statuses: dict[str, str], before: dict[str, float],
           after: dict[str, float], lag: object, minutes: float) -> dict[str, object]:  # fmt: skip
    by_kind: dict[str, Counter[int]] = defaultdict(Counter)
    latency: dict[str, list[float]] = defaultdict(list)
    unexpected: list[Record] = []
    outage_503 = 0
    for record in run.records:
        by_kind[record.kind][record.status] += 1
        if 200 <= record.status < 300:
            latency[record.kind].append(record.ms)
        elif record.status == 503 and in_outage(record, run.outages):
            outage_503 += 1
        else:
            unexpected.append(record)
    print(f"\n== {len(run.records)} requests in {minutes:g} min")
    for kind, counts in sorted(by_kind.items()):
        ok = latency[kind]
        figures = f"p50 {pct(ok, 0.5):.0f} ms, p95 {pct(ok, 0.95):.0f} ms" if ok else ""
        print(f"  {kind:<13} {dict(sorted(counts.items()))}  {figures}")
    print(f"  503 during an outage: {outage_503}")
    print(f"  other errors: {len(unexpected)}")
    for record in unexpected[:20]:
        print(f"    {record.kind} {record.status} {record.error[:200]}")
    final = Counter(statuses.values())
    lost = [d for d, s in statuses.items() if s == "lost"]
    stuck = [d for d, s in statuses.items() if s not in FINAL and s != "lost"]
    print(f"\n== documents accepted during the load: {len(statuses)}: {dict(final)}")
    print(f"  lost: {len(lost)}  stuck: {len(stuck)}  projection lag after: {lag}")
    print("\n== faults")
    for o in run.outages:
        print(f"  {o.kind:<8} ready again after {o.ready_after_s or float('nan'):.1f} s, "
              f"new upload embedded after {o.embedded_after_s or float('nan'):.1f} s")  # fmt: skip
    print("\n== memory (MB): a minute into the load -> its end")
    growth: dict[str, float] = {}
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a and b:
            growth[name] = (b - a) / a * 100
            print(f"  {name:<22} {a:8.1f} -> {b:8.1f}  ({growth[name]:+.1f}%)")
        else:
            print(f"  {name:<22} {a or float('nan'):8.1f} -> {b or float('nan'):8.1f}")
    return {
        "requests": {k: dict(v) for k, v in by_kind.items()},
        "latency_ms": {
            k: {"p50": pct(v, 0.5), "p95": pct(v, 0.95)} for k, v in latency.items() if v
        },
        "outage_503": outage_503,
        "other_errors": [r.__dict__ for r in unexpected],
        "documents": dict(final),
        "lost": lost,
        "stuck": stuck,
        "faults": [
            {
                "kind": o.kind,
                "ready_after_s": o.ready_after_s,
                "embedded_after_s": o.embedded_after_s,
            }
            for o in run.outages
        ],
        "memory_mb": {"start": before, "end": after, "growth_pct": growth},
    }


def trend(samples: list[tuple[float, dict[str, float]]]) -> None:
    """The kf processes' memory through the run: growth that levels off (warming) or
    keeps on (a leak) shows here, where two figures cannot tell them apart."""
    names = sorted({n for _, m in samples for n in m if n.startswith("kf ")})
    quarters = [samples[round(i * (len(samples) - 1) / 4)] for i in range(5)]
    print("\n== memory (MB) of the kf processes through the load")
    print("  " + " " * 22 + "".join(f"{f'{minute:.1f} min':>11}" for minute, _ in quarters))
    for name in names:
        row = "".join(f"{m.get(name, float('nan')):11.1f}" for _, m in quarters)
        print(f"  {name:<22}{row}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1.0, help="requests a second per client")
    parser.add_argument(
        "--upload-share", type=float, default=0.2, help="0 to see memory with a library that stays"
    )
    parser.add_argument("--nats-kills", type=int, default=2)
    parser.add_argument("--postgres-kills", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    corpus = [json.loads(line) for line in (args.dataset / "corpus.jsonl").open()]
    texts = [(d.get("title", "") + "\n\n" + d["text"]).strip() for d in corpus[:2000]]
    queries = [json.loads(line)["text"] for line in (args.dataset / "queries.jsonl").open()]
    fake = start_fake_server("openai")
    try:
        with tempfile.TemporaryDirectory(prefix="kf-soak-") as tmp:
            data_dir = Path(tmp) / "data"
            env = {
                **os.environ,
                "KF_LOG_LEVEL": "warning",
                "KF_CONFIG": str(config(Path(tmp) / "soak.yaml", f"{fake.url}/v1")),
            }
            log_path = Path(tmp) / "serve.log"
            process, url, key = start_serve(data_dir, log_path, env)
            serve = psutil.Process(process.pid)
            try:
                headers = {"Authorization": f"Bearer {key}"}
                with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
                    print(f"kf serve at {url}; seeding {SEED_DOCS} documents…", flush=True)
                    seed(http, texts)
                    run = Run()
                    duration = args.minutes * 60
                    started = time.monotonic()
                    until = started + duration
                    at_start = memory(serve, data_dir)
                    print(f"load: {args.clients} clients x {args.rate}/s for {args.minutes:g} min;"
                          f" load average {os.getloadavg()}", flush=True)  # fmt: skip
                    clients = [
                        Client(
                            n,
                            url,
                            key,
                            args.rate,
                            until,
                            run,
                            texts,
                            queries,
                            args.seed,
                            args.upload_share,
                        )
                        for n in range(args.clients)
                    ]
                    for client in clients:
                        client.start()
                    faults = inject(schedule(args, started, duration), data_dir, url, key, run)
                    # Memory is compared from a minute into the load (caches, pools and the
                    # model's buffers warm), before the first fault can strike.
                    warm = min(60.0, 0.1 * duration - 1)
                    time.sleep(max(0.0, warm - (time.monotonic() - started)))
                    before = memory(serve, data_dir)
                    samples: list[tuple[float, dict[str, float]]] = [(warm / 60, before)]
                    while any(c.is_alive() for c in clients):
                        time.sleep(30)
                        if any(c.is_alive() for c in clients):
                            minute = (time.monotonic() - started) / 60
                            samples.append((minute, memory(serve, data_dir)))
                        done = len(run.records)
                        print(f"  {time.strftime('%H:%M:%S')} {done} requests;"
                              f" load average {os.getloadavg()}", flush=True)  # fmt: skip
                    after = memory(serve, data_dir)
                    faults.join(600)
                    print("load stopped; waiting for every accepted upload…", flush=True)
                    statuses = settle(http, list(run.accepted), 300)
                    lag: object = None
                    deadline = time.monotonic() + 120
                    while time.monotonic() < deadline:
                        components = http.get("/v1/projections").json()["components"]
                        lag = {c["name"]: c["lag"] for c in components if c["lag"]}
                        if not lag:
                            break
                        time.sleep(1)
                    figures = report(run, statuses, before, after, lag or 0, args.minutes)
                    figures["memory_mb"]["at_load_start"] = at_start  # type: ignore[index]
                    figures["memory_mb"]["every_30s"] = samples  # type: ignore[index]
                    trend([*samples, (args.minutes, after)])
                    if args.out:
                        args.out.write_text(json.dumps(figures, indent=2, default=str))
            finally:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(120)
                except Exception:
                    process.kill()
                restarts = log_path.read_text(errors="replace").count("_restarted")
                print(f"\nkf serve log: {restarts} restart lines; kept at {log_path} until exit")
    finally:
        fake.close()


if __name__ == "__main__":
    main()
