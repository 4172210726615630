"""The shop's domain events and their schemas."""
from pydantic import BaseModel, ConfigDict, Field

from pipeline import event_type


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)


@event_type("order.placed")
class OrderPlaced(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: int
    customer_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)  # the column's length
    items: list[OrderItem] = Field(min_length=1)
    total_cents: int = Field(ge=0, le=2**31 - 1)  # what PostgreSQL's integer column holds
