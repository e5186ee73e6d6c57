# Jean Memory in a container: the same `pip install .` and `jean-memory serve` the tests run.
#
#   docker build -t jean-memory .
#   docker run -d --name jean-memory -p 127.0.0.1:8000:8000 -v jean-memory-data:/data \
#     -e JEAN_MEMORY_ISSUER=https://memory.example.com -e JWT_SECRET_KEY=$(openssl rand -hex 32) \
#     --stop-timeout 60 jean-memory
#
# Put a TLS-terminating proxy in front (Claude only connects over https) and see
# docs/deploy.md for JEAN_MEMORY_TRUSTED_PROXIES, the first account and backups.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# What `pip install .` reads: the project metadata (its readme included) and the package.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && rm -rf /app/src /app/build
# The int8 form of the embedding model, made once here (2 s, ~600 MB) rather than at each new
# container's first start; readable, not writable, by the service user.
ENV XDG_CACHE_HOME=/app/cache
RUN python -m jean_memory.memory.embeddings && chmod -R a+rX /app/cache

# An unprivileged user owning the data volume (SQLite database, generated key if any).
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin jean-memory \
    && mkdir -p /data \
    && chown jean-memory:jean-memory /data
ENV JEAN_MEMORY_DATA_DIR=/data
VOLUME ["/data"]
WORKDIR /data
USER jean-memory

EXPOSE 8000
# Liveness: /healthz answers 200 whenever the process serves HTTP (python, since the image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# SIGTERM: in-flight requests get up to 20 s, queued saves up to 20 s more; run with --stop-timeout 60.
STOPSIGNAL SIGTERM
CMD ["jean-memory", "serve", "--host", "0.0.0.0", "--port", "8000"]
