# pacs-gateway: a slim, non-root runtime image. The build stage installs the project into a
# virtual environment exactly as README.md's "Deployment" section does on a host; the runtime
# stage copies only that environment. The optional extras (bench, plot, test) are left out.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
WORKDIR /opt/pacs-gateway
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY pixcodec ./pixcodec
COPY storage ./storage
COPY migrations ./migrations
RUN python3 -m venv .venv && .venv/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime
ARG PACSGW_BUILD_COMMIT=unknown
# The venv sits at the path it was built at: its scripts name their interpreter by absolute path.
ENV PATH=/opt/pacs-gateway/.venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PACSGW_BUILD_COMMIT=${PACSGW_BUILD_COMMIT} \
    PACSGW_DATA_DIR=/var/lib/pacs-gateway \
    NUMBA_CACHE_DIR=/var/cache/pacs-gateway/numba
# numba caches compiled codec kernels next to their sources unless told otherwise, and the
# installed sources are not writable by the service user.
RUN groupadd --system --gid 10001 pacsgw \
    && useradd --system --uid 10001 --gid pacsgw --home-dir /var/lib/pacs-gateway --shell /usr/sbin/nologin pacsgw \
    && install -d -o pacsgw -g pacsgw -m 0750 /var/lib/pacs-gateway /var/cache/pacs-gateway
COPY --from=build /opt/pacs-gateway/.venv /opt/pacs-gateway/.venv
USER pacsgw
WORKDIR /var/lib/pacs-gateway
VOLUME ["/var/lib/pacs-gateway"]
# DICOM (dicom.port) and HTTP: /metrics, /healthz, /readyz (http.port).
EXPOSE 11112 8080
# The slim image has no curl: Python asks /healthz, which answers while the process serves.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PACSGW_HTTP__PORT', '8080') + '/healthz', timeout=4)"]
# SIGTERM: stop accepting, let running associations finish for dicom.shutdown_grace_seconds
# (30 s by default), abort the rest, exit 0. Give `docker stop -t` more than that grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pacs-gateway"]
CMD ["serve"]
