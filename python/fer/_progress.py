"""Progress bars: tqdm.auto (renders in Jupyter and terminals), or nothing."""

from __future__ import annotations

from typing import Any


class _Silent:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None: ...


def bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _Silent()
    try:
        # Notebook bars need ipywidgets; without it tqdm.auto warns and
        # falls back to text, so go straight to the text bar.
        import ipywidgets  # noqa: F401
        from tqdm.auto import tqdm
    except ImportError:
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is a dependency, but stay usable without it
            return _Silent()
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)
