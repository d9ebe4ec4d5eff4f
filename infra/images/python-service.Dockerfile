# One of our Python services (services/<SERVICE>: trustcentre, connector) on Debian's Python,
# installed from the wheelhouse staged into infra/images/<SERVICE>/ on the host: pip inside the
# image never reaches a package index (--no-index). Settings come from the plan's environment;
# the data folder /var/lib/<SERVICE> holds the service's SQLite database unless it uses PostgreSQL.
# BASE_IMAGE: the locally bootstrapped Debian (hubnode/base:trixie), or debian:trixie-slim / a mirror.
ARG BASE_IMAGE=hubnode/base:trixie
FROM ${BASE_IMAGE}
ARG SERVICE
ARG PORT

RUN test -n "${SERVICE}" && test -n "${PORT}" \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system --gid 10001 hubnode \
 && useradd --system --uid 10001 --gid hubnode --home-dir "/var/lib/${SERVICE}" --shell /usr/sbin/nologin hubnode \
 && install -d -o hubnode -g hubnode -m 0750 "/var/lib/${SERVICE}" \
 && install -d -m 0755 /run/secrets /run/hubnode "/etc/${SERVICE}"

COPY wheelhouse/ /tmp/wheelhouse/
# The launcher names the module once, so ENTRYPOINT needs no build argument (exec form cannot expand one).
RUN python3 -m venv /opt/service \
 && /opt/service/bin/pip install --no-index --no-cache-dir --find-links /tmp/wheelhouse "hubnode-${SERVICE}" \
 && rm -rf /tmp/wheelhouse \
 && printf '#!/bin/sh\nexec /opt/service/bin/python -m %s "$@"\n' "${SERVICE}" > /opt/service/bin/hubnode-service \
 && chmod 0755 /opt/service/bin/hubnode-service

USER hubnode
WORKDIR /var/lib/${SERVICE}
ENV PYTHONUNBUFFERED=1 \
    HUBNODE_HEALTH_URL=http://127.0.0.1:${PORT}/health
EXPOSE ${PORT}
VOLUME ["/var/lib/${SERVICE}"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null "$HUBNODE_HEALTH_URL" || exit 1
ENTRYPOINT ["/opt/service/bin/hubnode-service"]
