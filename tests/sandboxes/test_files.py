"""Docker-specific file API checks. The contract (binary-safe, any name, confined to the
workspace, errors) runs on Docker and E2B in test_contract.py."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc

import pytest

from apps.sandboxes import ResourceLimits, SandboxConfig

pytestmark = pytest.mark.docker


def test_hundred_megabytes_round_trip_by_checksum_without_extra_copies(module_manager, tmp_path):
    size = 100 * 1024 * 1024
    config = SandboxConfig(limits=ResourceLimits(disk_mb=256))
    with module_manager.create_sandbox(config) as box:
        source = tmp_path / "source.bin"
        digest = hashlib.sha256()
        with source.open("wb") as fh:
            for _ in range(size // (1024 * 1024)):
                chunk = os.urandom(1024 * 1024)
                digest.update(chunk)
                fh.write(chunk)
        tracemalloc.start()
        with source.open("rb") as fh:
            box.write_file("big.bin", fh)  # streamed from the file
        sink = tmp_path / "back.bin"
        with sink.open("wb") as fh:
            assert box.read_file_to("big.bin", fh) == size  # streamed to the file
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 16 * 1024 * 1024, f"streaming held {peak} bytes"
        assert hashlib.sha256(sink.read_bytes()).hexdigest() == digest.hexdigest()
        inside = box.execute("sha256sum", ["big.bin"]).stdout.split()[0]
        assert inside == digest.hexdigest()
        # And as bytes in memory: one buffer for the result plus the chunks it is joined from.
        tracemalloc.start()
        data = box.read_file("big.bin")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(data) == size and peak < 2.3 * size
        assert hashlib.sha256(data).hexdigest() == digest.hexdigest()
        del data
        payload = bytearray(io.BytesIO(b"y" * size).getbuffer())
        box.write_file("from-memory.bin", payload)
        assert box.execute("stat", ["-c", "%s", "from-memory.bin"]).stdout.strip() == str(size)
