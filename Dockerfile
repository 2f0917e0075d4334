# One image for every PubWatch process; the command picks the process
# (`pubwatch notify api`, `pubwatch notify worker`, `pubwatch ingest worker`).
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir uv==0.9.*
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/notify/pyproject.toml services/notify/
COPY shared shared
COPY services services
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN uv sync --all-packages --frozen --no-dev --no-editable

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 pubwatch
WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY topics.toml ./
ENV PATH="/app/.venv/bin:$PATH" \
    PUBWATCH_VAR_DIR=/app/var \
    PYTHONUNBUFFERED=1
RUN mkdir -p /app/var && chown pubwatch /app/var
USER pubwatch
EXPOSE 8000
CMD ["pubwatch", "--help"]
