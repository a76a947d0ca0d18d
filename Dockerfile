# syntax=docker/dockerfile:1
#
# TrackStore: one image, two entrypoints. The default command is the REST API; the consumer is the
# same image with the command overridden:
#
#   docker build -t trackstore .
#   docker run --rm -p 8000:8000 --env-file .env trackstore        # trackstore serve --host 0.0.0.0
#   docker run --rm --env-file .env trackstore consume              # trackstore consume
#
# Every third-party package comes from requirements.lock (runtime) and requirements-build.lock
# (the wheel's build backend), both pinned with hashes; see deploy/README.md to regenerate them.
# The HEALTHCHECK below probes the API on port 8000. `consume` listens on no port, so a consumer
# container run by plain Docker reports "unhealthy" (compose.yaml disables the check for it); ECS
# ignores image health checks and uses only those of the task definition (see deploy/).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

# Dependencies first: this layer is rebuilt only when a lock changes.
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/trackstore \
    && /opt/trackstore/bin/pip install --require-hashes --no-deps -r requirements.lock \
    && python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements-build.lock

# The project itself, as a wheel built offline with the locked backend; `pip check` fails the build
# when the lock misses a dependency that pyproject.toml declares.
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
    && /opt/trackstore/bin/pip install --no-deps /wheels/trackstore-*.whl \
    && /opt/trackstore/bin/pip check


FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/trackstore/bin:$PATH

RUN groupadd --system --gid 10001 trackstore \
    && useradd --system --uid 10001 --gid trackstore --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin trackstore

# Owned by root and read-only for the service user; byte code was compiled at install time.
COPY --from=build /opt/trackstore /opt/trackstore

# Settings come from the environment (a ./.env here is read too, if one is mounted).
WORKDIR /app
USER 10001:10001
EXPOSE 8000

# No curl in a slim image: the interpreter does the probe. 503 (a dependency down) fails it too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

ENTRYPOINT ["trackstore"]
CMD ["serve", "--host", "0.0.0.0"]
