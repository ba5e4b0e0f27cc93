"""Run every benchmark module in this package and print its figures as they come."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import cast

import bench


def main() -> None:
    for module_info in pkgutil.iter_modules(bench.__path__):
        if module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        run = cast(Callable[[], Iterator[str]], module.run)
        for line in run():
            print(line, flush=True)


if __name__ == "__main__":
    main()
