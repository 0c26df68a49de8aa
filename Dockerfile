# Mirrors the README: uv + the committed lock, then `giflens`. The default command starts the
# editors' app on port 8501 over the data folder volume; `docker run IMAGE ingest /media` ingests.
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
COPY app.py Makefile ./
COPY .streamlit .streamlit
RUN uv sync --frozen --no-dev
ENV GIFLENS_DATA_DIR=/data NUMBA_CACHE_DIR=/data/.numba-cache PATH="/app/.venv/bin:$PATH"
VOLUME ["/data", "/media"]
EXPOSE 8501
ENTRYPOINT ["giflens"]
CMD ["app", "--port", "8501"]
