"""``python -m redispool.cli``: the same as the ``redispool`` command."""

from . import main

main()
