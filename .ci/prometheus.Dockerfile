# CI only (.ci/e2e): docker-compose.yml's prom/prometheus image cannot be pulled here (no registry), so CI tags
# Debian's Prometheus package under that name. Same command-line flags and config format; built on the local
# debian:bookworm-slim.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/*
ENTRYPOINT ["/usr/bin/prometheus"]
