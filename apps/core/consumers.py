from channels.generic.websocket import AsyncJsonWebsocketConsumer

# The only module that names this group; the channel-layer plumbing test and the status pill
# of the base page use it to show that the push path works end to end.
SYSTEM_GROUP = "system.broadcast"


class PingConsumer(AsyncJsonWebsocketConsumer):
    """Authenticated liveness socket: answers pings and relays system broadcasts."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(SYSTEM_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(SYSTEM_GROUP, self.channel_name)

    async def receive_json(self, content: dict, **kwargs) -> None:
        if content.get("type") == "ping":
            await self.send_json({"type": "pong"})

    async def system_message(self, event: dict) -> None:
        await self.send_json({"type": "system", "text": str(event.get("text", ""))})
