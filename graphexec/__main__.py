"""``python -m graphexec``: the command line (needs the ``cli`` extra)."""

from __future__ import annotations

__all__ = ()

if __name__ == "__main__":
    from graphexec.cli import main

    main()
