"""The loopback server speaks the Messages API as the real ``anthropic`` SDK expects it."""

from __future__ import annotations

import anthropic
import pytest

from tests.support.anthropic_server import (
    AnthropicServer,
    ErrorReply,
    Reply,
    StreamErrorReply,
    text,
    tool_use,
)

USER = [{"role": "user", "content": "hi"}]


def test_non_streaming_message_with_tool_use_and_usage(anthropic_server, anthropic_client):
    anthropic_server.add(
        Reply(
            [text("Let me look."), tool_use("Bash", {"command": "ls"}, id="toolu_1")],
            usage={"input_tokens": 120, "output_tokens": 30, "cache_read_input_tokens": 7},
        )
    )
    message = anthropic_client.messages.create(model="claude-x", max_tokens=64, messages=USER)

    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.content[1].id == "toolu_1"
    assert message.content[1].input == {"command": "ls"}
    assert (message.usage.input_tokens, message.usage.output_tokens) == (120, 30)
    assert message.usage.cache_read_input_tokens == 7
    recorded = anthropic_server.requests[0]
    assert recorded.body["model"] == "claude-x" and not recorded.stream


def test_streaming_message_arrives_as_sse_events(anthropic_server, anthropic_client):
    anthropic_server.add(
        Reply(
            [text("Hello there, streaming world"), tool_use("Read", {"file_path": "a.txt"})],
            usage={"input_tokens": 11, "output_tokens": 22},
        )
    )
    kinds, texts = [], []
    with anthropic_client.messages.stream(model="m", max_tokens=64, messages=USER) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "text":
                texts.append(event.text)
        message = stream.get_final_message()

    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "input_json" in kinds and "content_block_stop" in kinds and "message_delta" in kinds
    assert len(texts) > 1 and "".join(texts) == "Hello there, streaming world"
    assert message.content[1].input == {"file_path": "a.txt"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 22)
    assert anthropic_server.requests[0].stream


def test_raw_wire_format_of_a_stream(anthropic_server):
    import httpx

    anthropic_server.add(Reply([text("ok")]))
    response = httpx.post(
        f"{anthropic_server.base_url}/v1/messages",
        headers={"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
        json={"model": "m", "max_tokens": 5, "messages": USER, "stream": True},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_429_with_retry_after_then_success(anthropic_server):
    anthropic_server.add(
        ErrorReply(429, "rate_limit_error", "slow down", headers={"retry-after-ms": "150"}),
        Reply([text("done")]),
    )
    client = anthropic.Anthropic(api_key="test-key", base_url=anthropic_server.base_url)
    message = client.messages.create(model="m", max_tokens=5, messages=USER)

    assert message.content[0].text == "done"
    first, second = anthropic_server.requests
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 0.15  # the SDK honoured retry-after-ms


def test_401_is_an_authentication_error_with_the_api_error_body(anthropic_server):
    client = anthropic.Anthropic(api_key="wrong", base_url=anthropic_server.base_url)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=USER)
    assert caught.value.status_code == 401
    assert caught.value.body["error"]["type"] == "authentication_error"
    assert caught.value.request_id.startswith("req_")
    assert len(anthropic_server.requests) == 1  # 401 is never retried


def test_error_event_in_the_middle_of_a_stream(anthropic_server, anthropic_client):
    anthropic_server.add(StreamErrorReply("overloaded_error", "Overloaded"))
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        anthropic_client.messages.stream(model="m", max_tokens=5, messages=USER) as stream,
    ):
        stream.get_final_message()
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_tool_use_without_tool_result_is_rejected_like_the_real_api(
    anthropic_server, anthropic_client
):
    anthropic_server.add(Reply([text("never sent")]))
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [tool_use("Bash", {"command": "ls"}, id="toolu_9")]},
        {"role": "user", "content": "where is my result?"},
    ]
    with pytest.raises(anthropic.BadRequestError, match="toolu_9"):
        anthropic_client.messages.create(model="m", max_tokens=5, messages=messages)


def test_callable_script_sees_the_request(anthropic_client):
    def answer(request):
        return Reply([text(f"you said {request.messages[-1]['content']}")])

    with AnthropicServer(answer) as server:
        client = anthropic.Anthropic(api_key="test-key", base_url=server.base_url)
        message = client.messages.create(model="m", max_tokens=5, messages=USER)
    assert message.content[0].text == "you said hi"


def test_exhausted_script_says_so(anthropic_server, anthropic_client):
    with pytest.raises(anthropic.BadRequestError, match="script exhausted"):
        anthropic_client.messages.create(model="m", max_tokens=5, messages=USER)
