"""WebSocket routes; each app appends its own patterns here."""

from django.urls import path

from apps.core.consumers import PingConsumer
from apps.runs.consumers import RunConsumer

websocket_urlpatterns = [
    path("ws/ping/", PingConsumer.as_asgi()),
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
]
