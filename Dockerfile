# The redispool image: the library, the `redispool` command and worker_main.py.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY redispool ./redispool
RUN pip install . "hiredis>=3.0"
COPY worker_main.py ./

USER nobody
CMD ["redispool", "--help"]
