# Mirrors the README: uv + the committed lock, then `giflens`.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY embeddings embeddings
COPY models models
COPY labeling labeling
COPY explorer explorer
COPY Makefile ./
RUN uv sync --frozen --no-dev
ENV GIFLENS_DATA_DIR=/data PATH="/app/.venv/bin:$PATH"
VOLUME ["/data", "/media"]
ENTRYPOINT ["giflens"]
CMD ["ingest", "/media"]
