# syntax=docker/dockerfile:1
# The project's one image: the `ot` CLI (simulator, lander, state writer) and the Dagster code
# location with its webserver and daemon. docker-compose.yml runs each service from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OT_LAKE_DIR=/var/lib/ot/lake \
    DAGSTER_HOME=/var/lib/ot/dagster

# Install from a read-write bind mount of the build context: the sources end up in site-packages
# only (no second copy in the image that could shadow it), and the pip cache survives rebuilds.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,target=/tmp/src,rw \
    cd /tmp/src && pip install -c requirements.lock .

# Non-root user owning the two data directories; compose mounts named volumes on them, and a
# fresh named volume inherits this ownership (and the dagster.yaml below).
RUN groupadd --system --gid 10001 ot \
    && useradd --system --uid 10001 --gid ot --home-dir /opt/ot --shell /usr/sbin/nologin ot \
    && mkdir -p /opt/ot "$OT_LAKE_DIR" "$DAGSTER_HOME" \
    && chown -R ot:ot /opt/ot /var/lib/ot

WORKDIR /opt/ot
# The Dagster workspace (loaded by `dagster-webserver -w workspace.yaml`) and the instance
# configuration, which Dagster reads from $DAGSTER_HOME/dagster.yaml.
COPY --chown=ot:ot workspace.yaml dagster.yaml ./
COPY --chown=ot:ot dagster.yaml ${DAGSTER_HOME}/dagster.yaml
# Probes used by the compose healthchecks (progress of the simulator, lander and state writer).
COPY --chown=ot:ot deploy/healthcheck.py ./healthcheck.py

USER ot
CMD ["ot", "--help"]
