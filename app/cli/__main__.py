"""``python -m app.cli`` is the same as the ``scrm`` console script."""

from app.cli import main

main()
