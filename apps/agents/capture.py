"""Copy the files a run produced out of its sandbox, before the sandbox goes away.

One ``find -P <workspace> -mindepth 1 -not -type d -printf ...`` lists every non-directory
without following symlinks; ``%y`` is the entry's own type, so only regular files (``f``) are
captured and symlinks, FIFOs, sockets and devices are skipped (and reported when they match a
pattern). Matching files are read one by one with ``read_file``, in path order, until the file
count or byte cap is hit; whatever is left out is reported with the reason.
"""

from __future__ import annotations

import hashlib
import inspect
import posixpath
from dataclasses import dataclass, field
from typing import Any

from apps.sandboxes.errors import SandboxError

from . import paths
from .results import CapturedFile

MAX_SKIPPED_REPORTED = 50
# Files that run code on the machine of whoever downloads the artifacts and uses them there: git
# hooks (run by git), git config (core.hooksPath, aliases, fsmonitor), shell start-up files and
# editor task/settings files (VS Code runs tasks and honours settings of an opened folder).
# An agent told to by a prompt injection writes exactly these; they are never captured.
REFUSED_PATTERNS = (
    "**/.git/hooks/**",
    "**/.git/config",
    "**/.bashrc",
    "**/.bash_profile",
    "**/.profile",
    "**/.zshrc",
    "**/.vscode/settings.json",
    "**/.vscode/tasks.json",
    "**/.vscode/launch.json",
)
REFUSED_REASON = "refused: could run code where the artifacts are used (hook, shell or editor file)"
LISTING_MAX_BYTES = 16 * 1024 * 1024
_KINDS = {"l": "symlink", "p": "fifo", "s": "socket", "c": "device", "b": "device", "D": "door"}


@dataclass
class CaptureReport:
    count: int = 0
    total_bytes: int = 0
    skipped: list[dict] = field(default_factory=list)
    skipped_total: int = 0
    limit_hit: str | None = None
    error: str | None = None

    def skip(self, path: str, reason: str) -> None:
        self.skipped_total += 1
        if len(self.skipped) < MAX_SKIPPED_REPORTED:
            self.skipped.append({"path": path, "reason": reason})

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total_bytes": self.total_bytes,
            "skipped": list(self.skipped),
            "skipped_total": self.skipped_total,
            "limit_hit": self.limit_hit,
            "error": self.error,
        }


def capture_files(
    sandbox: Any,
    workspace: str,
    patterns: list[str],
    *,
    max_files: int,
    max_bytes: int,
) -> tuple[list[CapturedFile], CaptureReport]:
    report = CaptureReport()
    files: list[CapturedFile] = []
    workspace = posixpath.normpath(workspace)
    options: dict[str, Any] = {"workdir": workspace}
    if "max_output_bytes" in inspect.signature(sandbox.execute).parameters:
        # The default cap keeps 1 MiB: an agent filling its disk with tiny files (~65,000 on
        # 256 MB) would push its real outputs out of the listing. The disk's inode budget bounds
        # the entries; this bounds the bytes held.
        options["max_output_bytes"] = LISTING_MAX_BYTES
    try:
        listing = sandbox.execute(
            "find",
            ["-P", workspace, "-mindepth", "1", "-not", "-type", "d", "-printf", "%y\\t%s\\t%P\\0"],
            **options,
        )
    except SandboxError as exc:
        report.error = f"could not list {workspace}: {exc}"
        return files, report
    if listing.exit_code != 0 and not listing.stdout:
        report.error = f"could not list {workspace}: {listing.stderr.strip()}"
        return files, report
    records = listing.stdout.split("\0")
    if getattr(listing, "truncated", False):
        # The sandbox keeps the *tail* of a long output (a workspace flooded with tiny files):
        # the first record is then a fragment. The rest is still a fair sample to capture from.
        report.error = "the file listing was cut short by the sandbox output limit"
        records = records[1:]

    entries = []
    for record in records:
        parts = record.split("\t", 2)
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
            continue  # empty, or a fragment
        kind, size, rel = parts
        if any(paths.glob_match(pattern, rel) for pattern in patterns):
            entries.append((rel, kind, int(size)))

    entries.sort()
    # Reported first, so a flood of other skipped files cannot push them out of the report.
    refused = {rel for rel, _, _ in entries if is_refused(rel)}
    for rel in sorted(refused):
        report.skip(rel, REFUSED_REASON)

    for rel, kind, size in entries:
        if rel in refused:
            continue
        if kind != "f":
            report.skip(rel, f"not a regular file ({_KINDS.get(kind, kind)})")
            continue
        if report.count >= max_files:
            report.limit_hit = report.limit_hit or "max_files"
            report.skip(rel, f"file cap of {max_files} files reached")
            continue
        if report.total_bytes + size > max_bytes:
            report.limit_hit = report.limit_hit or "max_bytes"
            report.skip(rel, f"byte cap of {max_bytes} bytes reached ({size} bytes)")
            continue
        try:
            content = sandbox.read_file(posixpath.join(workspace, rel))
        except SandboxError as exc:
            report.skip(rel, f"unreadable: {exc}")
            continue
        if report.total_bytes + len(content) > max_bytes:  # it grew since the listing
            report.limit_hit = report.limit_hit or "max_bytes"
            report.skip(rel, f"byte cap of {max_bytes} bytes reached ({len(content)} bytes)")
            continue
        files.append(
            CapturedFile(
                path=rel,
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
                content=content,
            )
        )
        report.count += 1
        report.total_bytes += len(content)
    return files, report


def is_refused(path: str) -> bool:
    return any(paths.glob_match(pattern, path) for pattern in REFUSED_PATTERNS)
