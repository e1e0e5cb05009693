from celery import shared_task


@shared_task(name="core.echo")
def echo(value: str) -> dict:
    """Round-trip probe: proves a worker process consumes from the broker and answers."""
    import os

    return {"value": value, "worker_pid": os.getpid()}
