# Runs `connector run` on a config mounted at /config/config.yaml:
#   docker build -t sms-connector .
#   docker run --rm -v "$PWD/config.yaml:/config/config.yaml:ro" -v "$PWD/data:/data" sms-connector
# Relative paths in the config (ledger, inbox, outbox) resolve against the config's folder; point
# them at /data (e.g. state: sqlite:////data/connector.db) so they outlive the container.
# Inside a container the webhook server must listen on all interfaces: `server: {host: 0.0.0.0}`
# in the mounted config, and `-p 8080:8080` on `docker run`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CONNECTOR_CONFIG=/config/config.yaml
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY connector ./connector
COPY sources ./sources
COPY sinks ./sinks
COPY policies ./policies
# The versions the test suite passed with (constraints.txt, the lock `make upgrade` writes).
RUN pip install -c constraints.txt . && useradd --system --uid 10001 connector && mkdir -p /data && chown connector /data
USER connector
WORKDIR /data
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["connector"]
CMD ["run"]
