# One image for every Olympus process; the compose file picks the command.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OLYMPUS_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas schemas
COPY gateway gateway
COPY workers workers
COPY hades hades
COPY olympus olympus
RUN pip install --no-cache-dir .
USER nobody
