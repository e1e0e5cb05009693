"""sandboxweb's command-line client: launch a run, follow it live, exit with its status.

    python -m sandboxweb.cli launch --project 3 --command "pytest -q"
    python -m sandboxweb.cli launch --project 3 --task "Fix the failing test" --wait-verdict
    python -m sandboxweb.cli follow 42
    python -m sandboxweb.cli cancel 42

The server and token come from ``--url``/``--token`` or ``SANDBOXWEB_URL``/``SANDBOXWEB_TOKEN``.
Only the standard library is used (and no Django), so the file also works copied on its own.
Log lines go to stdout; the progress line (status, elapsed time, tokens, cost) goes to stderr,
redrawn in place on a terminal and printed on each change otherwise (CI logs).

Exit codes: see EXIT_CODES (also in ``--help`` and docs/api.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

EXIT_CODES = {
    "succeeded": 0,
    "failed": 1,
    # 2: usage error (argparse)
    "timed_out": 3,
    "oom": 4,
    "cancelled": 5,
    "crashed": 6,
    "error": 7,
}
# With --wait-verdict, after a succeeded run: the reviewer's verdict decides.
VERDICT_EXIT_CODES = {"approved": 0, "needs_work": 20, "rejected": 21}
EXIT_API_ERROR = 10  # the API refused the request (4xx: bad token, scope, not found, ...)
EXIT_UNREACHABLE = 11  # the server could not be reached or failed (5xx)
EXIT_NO_VERDICT = 22  # --verdict-timeout passed without a verdict
EXIT_INTERRUPTED = 130
TERMINAL = frozenset(EXIT_CODES)
USER_AGENT = "sandboxweb-cli/1"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(f"{status} {code}: {message}" + (f" (field: {field})" if field else ""))
        self.status = status
        self.code = code
        self.field = field


class Unreachable(Exception):
    pass


@dataclass
class Client:
    base_url: str
    token: str
    timeout: float = 30.0
    max_retries: int = 5
    sleep: Callable[[float], None] = time.sleep

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        """JSON in, JSON out. Waits out 429s (Retry-After) and retries connection errors and
        5xx a few times: a CI job should not fail because the server restarted."""
        query = {k: v for k, v in params.items() if v is not None}
        url = self.base_url.rstrip("/") + "/api/v1" + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
            request.add_header("Authorization", f"Bearer {self.token}")
            request.add_header("Accept", "application/json")
            request.add_header("User-Agent", USER_AGENT)
            if data is not None:
                request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                    payload = response.read()
                    kind = response.headers.get("Content-Type", "")
                    return json.loads(payload) if "json" in kind else payload.decode()
            except urllib.error.HTTPError as exc:
                status = exc.code
                retry_after = exc.headers.get("Retry-After")
                try:
                    error = json.loads(exc.read() or b"{}").get("error") or {}
                except ValueError:
                    error = {}
                if status == 429 and attempt < self.max_retries:
                    self.sleep(min(60.0, float(retry_after or 1)))
                    continue
                if status >= 500 and attempt < self.max_retries:
                    self.sleep(min(10.0, 0.5 * 2**attempt))
                    continue
                if status >= 500:
                    raise Unreachable(f"server error {status}") from None
                raise ApiError(
                    status,
                    error.get("code", "error"),
                    error.get("message", exc.reason),
                    error.get("field"),
                ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if attempt < self.max_retries:
                    self.sleep(min(10.0, 0.5 * 2**attempt))
                    continue
                raise Unreachable(f"cannot reach {self.base_url}: {exc}") from None
        raise Unreachable("retries exhausted")  # pragma: no cover


def _human_tokens(count: int) -> str:
    if count >= 1_000_000:
        return f"{count / 1_000_000:.1f}M"
    if count >= 1000:
        return f"{count / 1000:.1f}k"
    return str(count)


def _elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


@dataclass
class Progress:
    """The one-line summary of a run, drawn on stderr."""

    run_id: int
    stream: IO[str]
    live: bool  # a terminal: redraw one line; else print a line when something changes
    status: str = "queued"
    message: str = ""
    tokens: int = 0
    cost: float = 0.0
    started: float = field(default_factory=time.monotonic)
    _last: str = ""
    _drawn: bool = False

    def line(self) -> str:
        parts = [f"run #{self.run_id}", self.status, _elapsed(time.monotonic() - self.started)]
        if self.tokens:
            parts.append(f"{_human_tokens(self.tokens)} tokens ${self.cost:.4f}")
        if self.message and self.status not in TERMINAL:
            parts.append(self.message[:60])
        return " · ".join(parts)

    def draw(self, *, force: bool = False) -> None:
        text = self.line()
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self._drawn = True
        elif force or self._key() != self._last:
            self.stream.write(f"[{text}]\n")
        self._last = self._key()
        self.stream.flush()

    def _key(self) -> str:
        return f"{self.status}|{self.message}"

    def clear(self) -> None:
        """Before printing a log line on a terminal: the progress line is redrawn after."""
        if self.live and self._drawn:
            self.stream.write("\r\x1b[2K")
            self._drawn = False

    def apply(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        kind = event.get("type")
        if kind == "status" and data.get("status"):
            self.status = data["status"]
            self.message = data.get("message") or ""
        elif kind == "usage":
            total = data.get("total") or {}
            self.tokens = sum(
                int(total.get(key) or 0)
                for key in (
                    "input_tokens",
                    "output_tokens",
                    "cache_read_tokens",
                    "cache_write_tokens",
                )
            )
            self.cost = float(total.get("cost_usd") or 0)


def _describe(event: dict[str, Any]) -> str | None:
    """What a log reader wants to see of an event besides log lines (None: nothing)."""
    data = event.get("data") or {}
    kind = event.get("type")
    if kind == "command_started":
        return f"$ {data.get('command', '')}"
    if kind == "command_finished" and data.get("exit_code"):
        return f"[exit {data.get('exit_code')}]"
    if kind == "assistant_message" and data.get("text"):
        return f"[agent] {data['text']}"
    if kind == "tool_call":
        summary = json.dumps(data.get("input") or {}, ensure_ascii=False)
        return f"[tool] {data.get('tool')} {summary[:200]}"
    if kind == "log_truncated":
        return "[log limit reached: further output is counted, not stored]"
    if kind == "run_finished" and data.get("error"):
        error = data["error"]
        return f"[error] {error.get('type', '')}: {error.get('message', '')}"
    return None


def follow(
    client: Client,
    run_id: int,
    *,
    out: IO[str],
    err: IO[str],
    poll: float = 1.0,
    after: int = 0,
    live: bool | None = None,
) -> dict[str, Any]:
    """Print the run's events from ``after`` on until it is over; returns the final run."""
    progress = Progress(run_id=run_id, stream=err, live=err.isatty() if live is None else live)
    while True:
        page = client.request("GET", f"/runs/{run_id}/events", after=after, limit=500)
        for event in page["events"]:
            progress.apply(event)
            text = event["data"].get("text") if event["type"] == "log" else _describe(event)
            if text is not None:
                progress.clear()
                out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
        after = page["next_after"]
        progress.status = page["status"]
        progress.draw()
        if page["finished"]:
            break
        if not page["events"] or after >= page["last_seq"]:
            client.sleep(poll)
    run = client.request("GET", f"/runs/{run_id}")
    progress.status = run["status"]
    progress.tokens = run["usage"]["total_tokens"] or progress.tokens
    progress.cost = float(run["usage"]["cost_usd"] or 0)
    progress.draw(force=True)
    if progress.live:
        err.write("\n")
    reason = run.get("end_reason") or ""
    detail = f" ({reason})" if reason and reason not in {run["status"], "completed"} else ""
    message = f": {run['error_message']}" if run.get("error_message") else ""
    err.write(f"run #{run_id} {run['status']}{detail}{message}\n")
    err.flush()
    return run


def exit_code_for(status: str) -> int:
    return EXIT_CODES.get(status, EXIT_CODES["error"])


def wait_for_verdict(
    client: Client, run_id: int, *, err: IO[str], poll: float, timeout: float | None
) -> str:
    """Poll the run's review until someone gives a verdict; returns it ("" on timeout)."""
    err.write(f"run #{run_id}: waiting for a reviewer's verdict\n")
    err.flush()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        review = client.request("GET", f"/runs/{run_id}/review")
        if review.get("verdict"):
            note = f": {review['verdict_note']}" if review.get("verdict_note") else ""
            err.write(f"run #{run_id} {review['verdict']} by {review.get('verdict_by')}{note}\n")
            err.flush()
            return review["verdict"]
        if deadline is not None and time.monotonic() >= deadline:
            err.write(f"run #{run_id}: no verdict within {timeout:g} s\n")
            return ""
        client.sleep(max(poll, 5.0))


def _parse_override(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def build_parser() -> argparse.ArgumentParser:
    codes = ", ".join(f"{code} {status}" for status, code in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="python -m sandboxweb.cli",
        description="Launch and follow sandboxweb runs through the REST API.",
        epilog=f"Exit codes: {codes}, 2 usage error, {EXIT_API_ERROR} API refused the "
        f"request, {EXIT_UNREACHABLE} server unreachable, {EXIT_INTERRUPTED} interrupted. "
        "With --wait-verdict: 0 approved, 20 needs work, 21 rejected, 22 no verdict in time.",
    )
    parser.add_argument("--url", default=os.environ.get("SANDBOXWEB_URL"), help="$SANDBOXWEB_URL")
    parser.add_argument(
        "--token", default=os.environ.get("SANDBOXWEB_TOKEN"), help="$SANDBOXWEB_TOKEN"
    )
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls")
    commands = parser.add_subparsers(dest="action", required=True)

    launch = commands.add_parser("launch", help="launch a run and follow it")
    launch.add_argument("--project", type=int, required=True)
    what = launch.add_mutually_exclusive_group()
    what.add_argument("--task", help="the agent's task")
    what.add_argument(
        "--command", action="append", dest="commands", help="a script command (repeatable)"
    )
    launch.add_argument("--kind", choices=["agent", "script"])
    launch.add_argument(
        "--set",
        action="append",
        type=_parse_override,
        default=[],
        metavar="NAME=VALUE",
        help="override a setting for this run, e.g. --set memory_mb=512 (repeatable)",
    )
    launch.add_argument("--detach", action="store_true", help="print the run id and exit")
    launch.add_argument(
        "--cancel-on-interrupt", action="store_true", help="cancel the run on Ctrl-C"
    )
    launch.add_argument(
        "--wait-verdict",
        action="store_true",
        help="after a succeeded run, wait for a reviewer's verdict and exit with it "
        "(needs the reviews:read scope)",
    )
    launch.add_argument(
        "--verdict-timeout", type=float, default=None, help="give up waiting after N s"
    )

    follow_cmd = commands.add_parser("follow", help="follow a run until it ends")
    follow_cmd.add_argument("run", type=int)
    follow_cmd.add_argument("--after", type=int, default=0, help="start after this seq")

    cancel = commands.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run", type=int)
    return parser


def main(
    argv: list[str] | None = None,
    *,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.url or not args.token:
        parser.error("give --url and --token (or set SANDBOXWEB_URL and SANDBOXWEB_TOKEN)")
    client = Client(base_url=args.url, token=args.token)
    run_id: int | None = None
    try:
        if args.action == "cancel":
            run = client.request("POST", f"/runs/{args.run}/cancel")
            err.write(f"run #{run['id']} {run['status']}\n")
            return 0
        if args.action == "follow":
            run_id = args.run
            run = follow(client, run_id, out=out, err=err, poll=args.poll, after=args.after)
            return exit_code_for(run["status"])
        body: dict[str, Any] = {"project": args.project, "overrides": dict(args.set)}
        if args.kind:
            body["kind"] = args.kind
        if args.commands:
            body["commands"] = args.commands
        elif args.task is not None:
            body["task"] = args.task
        run = client.request("POST", "/runs", body)
        run_id = run["id"]
        err.write(f"run #{run_id} launched: {args.url.rstrip('/')}{run['links']['web']}\n")
        if args.detach:
            out.write(f"{run_id}\n")
            return 0
        run = follow(client, run_id, out=out, err=err, poll=args.poll)
        if args.wait_verdict and run["status"] == "succeeded":
            verdict = wait_for_verdict(
                client, run_id, err=err, poll=args.poll, timeout=args.verdict_timeout
            )
            return VERDICT_EXIT_CODES.get(verdict, EXIT_NO_VERDICT)
        return exit_code_for(run["status"])
    except ApiError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_API_ERROR
    except Unreachable as exc:
        err.write(f"error: {exc}\n")
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        if run_id is not None and getattr(args, "cancel_on_interrupt", False):
            try:
                client.request("POST", f"/runs/{run_id}/cancel")
                err.write(f"\nrun #{run_id}: cancel requested\n")
            except (ApiError, Unreachable) as exc:
                err.write(f"\nrun #{run_id}: could not cancel: {exc}\n")
        elif run_id is not None:
            err.write(f"\nstopped following run #{run_id} (it goes on)\n")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
