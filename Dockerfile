# Trackside: one image for `trackside serve` and `trackside worker`.
# Build stage: wheels for Trackside and its dependencies (some compile: asyncpg, uvloop, httptools).
FROM python:3.11-slim AS build
# Build tools only; their exact versions do not matter (they never reach the runtime image).
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trackside ./trackside
COPY sidecar ./sidecar
COPY middleware ./middleware
COPY rollups ./rollups
COPY web_snippet ./web_snippet
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: no compiler, no sources, a non-root user.
FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home trackside
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001
WORKDIR /data
ENV TRACKSIDE_HOST=0.0.0.0 \
    TRACKSIDE_PORT=8080 \
    TRACKSIDE_DATABASE_URL=sqlite+aiosqlite:////data/trackside.db \
    TRACKSIDE_SPOOL_DIR=/data/spool \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8080
# The sidecar's health check; a worker's container uses `trackside worker --check` instead (compose.yaml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/_trackside/health', timeout=2).status != 200)"]
ENTRYPOINT ["trackside"]
CMD ["serve"]
