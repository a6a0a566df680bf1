"""Payload models: a queue whose payloads are checked before they are stored.

Run a worker for it with ``forebay worker examples.orders:app`` or the demo below:

    python examples/orders.py             # enqueues orders, one refused, and handles the rest
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from pydantic import BaseModel, Field

from forebay import Forebay, Job, PayloadValidationError

app = Forebay()


class Order(BaseModel):
    id: int
    sku: str = Field(min_length=1)
    qty: int = Field(gt=0)
    placed_at: datetime


@app.handler("orders", payload=Order)
async def fulfil(job: Job) -> None:
    order = job.payload_as(Order)  # job.payload is this same Order, typed for the checker
    print(f"order {order.id}: {order.qty} x {order.sku}, placed {order.placed_at:%Y-%m-%d}")


async def demo() -> None:
    async with app:
        first = await app.enqueue(
            "orders", {"id": "1", "sku": "A-7", "qty": 2, "placed_at": "2026-11-02T09:00:00Z"}
        )
        await app.enqueue(
            "orders", Order(id=2, sku="B-1", qty=1, placed_at=datetime.now().astimezone())
        )
        try:
            await app.enqueue("orders", {"id": 3, "sku": "", "qty": 0})
        except PayloadValidationError as refused:
            print(f"refused: {refused}")
            for error in refused.errors:
                print(f"  {'.'.join(map(str, error['loc']))}: {error['msg']}")
        stored = await app.get_job(first.id)
        print(f"stored as: {stored.payload}")
        await app.run_worker(burst=True)


if __name__ == "__main__":
    asyncio.run(demo())
