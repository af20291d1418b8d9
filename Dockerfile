# The pbx-analytics ingest service (also runs `migrate`, `import`, `simulate`, `sql`).
# Built from this repository with pip; used by compose/docker-compose*.yml.
#
# Lean by default: for a ClickHouse server (`--clickhouse http://...`). The embedded engine
# (chdb and pandas, ~650 MB more) only where it runs:
#   docker build --build-arg EXTRAS=embedded .     (compose: the `embedded` profile)
# Measured without a Docker engine, as the installed size of a venv built like this image
# (pip install . vs '.[embedded]', site-packages): 364 MB vs 1009 MB (pyarrow and numpy, 243 MB,
# are the import's own dependencies).
FROM python:3.12-slim
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY sql ./sql
RUN pip install ".${EXTRAS:+[$EXTRAS]}" && rm -rf /src

# An unprivileged user; the spool directory is a volume in compose.
RUN useradd --system --uid 10001 --home-dir /var/lib/pbx-analytics --create-home pbx \
    && mkdir -p /var/lib/pbx-analytics/spool && chown -R pbx /var/lib/pbx-analytics
USER pbx
WORKDIR /var/lib/pbx-analytics

ENV PBX_HOST=0.0.0.0 \
    PBX_PORT=8080 \
    PBX_SPOOL_DIR=/var/lib/pbx-analytics/spool
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"]

ENTRYPOINT ["pbx-analytics"]
CMD ["serve"]
