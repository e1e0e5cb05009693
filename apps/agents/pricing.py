"""What model usage costs: the one place that knows Anthropic's per-model prices.

Prices are USD per million tokens (MTok), from Anthropic's pricing page
(platform.claude.com/docs/en/about-claude/pricing) as of October 2026. ``cache_write`` is the
5-minute cache write (the TTL of ``cache_control: {"type": "ephemeral"}``). Update this table, and
only this table, when prices change. A model missing from it is priced at the most expensive row,
so an unknown model can only make a budget stop early, never late.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPrice:
    input: float
    output: float
    cache_read: float
    cache_write: float


# Keys are model-id prefixes; the longest matching prefix wins, so dated ids
# ("claude-haiku-4-5-20251001") and aliases share a row.
PRICES_PER_MTOK: dict[str, ModelPrice] = {
    "claude-fable-5-2": ModelPrice(input=10.0, output=50.0, cache_read=0.25, cache_write=12.5),
    "claude-fable-5-1": ModelPrice(input=10.0, output=50.0, cache_read=0.25, cache_write=12.5),
    "claude-fable-5": ModelPrice(input=10.0, output=50.0, cache_read=1.0, cache_write=12.5),
    "claude-mythos-5-2": ModelPrice(input=10.0, output=50.0, cache_read=0.25, cache_write=12.5),
    "claude-mythos-5-1": ModelPrice(input=10.0, output=50.0, cache_read=0.25, cache_write=12.5),
    "claude-mythos-5": ModelPrice(input=10.0, output=50.0, cache_read=1.0, cache_write=12.5),
    "claude-opus-5-5": ModelPrice(input=4.0, output=20.0, cache_read=0.20, cache_write=5.0),
    "claude-opus-5": ModelPrice(input=5.0, output=25.0, cache_read=0.50, cache_write=6.25),
    "claude-opus-4-8": ModelPrice(input=5.0, output=25.0, cache_read=0.50, cache_write=6.25),
    "claude-opus-4-7": ModelPrice(input=5.0, output=25.0, cache_read=0.50, cache_write=6.25),
    "claude-opus-4-6": ModelPrice(input=5.0, output=25.0, cache_read=0.50, cache_write=6.25),
    "claude-opus-4-5": ModelPrice(input=5.0, output=25.0, cache_read=0.50, cache_write=6.25),
    "claude-opus-4-1": ModelPrice(input=15.0, output=75.0, cache_read=1.50, cache_write=18.75),
    "claude-opus-4": ModelPrice(input=15.0, output=75.0, cache_read=1.50, cache_write=18.75),
    "claude-sonnet-5-5": ModelPrice(input=2.0, output=10.0, cache_read=0.10, cache_write=2.5),
    "claude-sonnet-5": ModelPrice(input=2.0, output=10.0, cache_read=0.20, cache_write=2.5),
    "claude-sonnet-4": ModelPrice(input=3.0, output=15.0, cache_read=0.30, cache_write=3.75),
    "claude-haiku-5-5": ModelPrice(input=0.10, output=0.50, cache_read=0.01, cache_write=0.125),
    "claude-haiku-4-5": ModelPrice(input=1.0, output=5.0, cache_read=0.10, cache_write=1.25),
}

FALLBACK_PRICE = max(PRICES_PER_MTOK.values(), key=lambda price: (price.output, price.input))


def price_for(model: str) -> ModelPrice:
    matches = [prefix for prefix in PRICES_PER_MTOK if model.startswith(prefix)]
    if not matches:
        return FALLBACK_PRICE
    return PRICES_PER_MTOK[max(matches, key=len)]


def is_known_model(model: str) -> bool:
    return any(model.startswith(prefix) for prefix in PRICES_PER_MTOK)


def cost_usd(
    model: str,
    *,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float:
    """The cost of some usage; ``input_tokens`` excludes cached tokens, as the API counts them."""
    price = price_for(model)
    return (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_read_tokens * price.cache_read
        + cache_write_tokens * price.cache_write
    ) / 1_000_000
