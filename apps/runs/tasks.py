"""Celery entry points: ids in, one call out (the logic lives in execution.py)."""

from __future__ import annotations

from celery import shared_task

from .execution import execute_run, sweep


@shared_task(name="runs.execute", acks_late=True, reject_on_worker_lost=True)
def execute_run_task(run_id: int) -> str:
    """Idempotent: a duplicate or late delivery finds the run claimed and returns at once."""
    return execute_run(int(run_id))


@shared_task(name="runs.sweep", ignore_result=True)
def sweep_task() -> dict:
    return sweep()
