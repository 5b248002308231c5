# syntax=docker/dockerfile:1.26.0
# check=skip=InvalidDefaultArgInFrom
# One image recipe for every service of the workspace, built from the repository root:
#
#   docker build --build-arg SERVICE=contact-svc -t contact-platform/contact-svc .
#
# SERVICE names the workspace package to install; the table of stages at the end gives each
# package its ASGI app and port (the same ports as `make run` and the Kubernetes manifests).
# segment-svc's image also runs the stream worker (command `segment-worker`, web server on 8114),
# and every image can run the one-shot `python -m contacts_shared.topics apply`.
#
# Base images (and the Dockerfile frontend above) are pinned to exact versions. Not by digest:
# the machine this was written on could not reach a registry to read one; add `@sha256:...`
# where a registry answers.
ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm
# Required, without a default (hence the check skipped above): an empty SERVICE fails at once
# with "base name (${SERVICE}) should not be blank".
ARG SERVICE

FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore "uv==0.13.9"
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never

# Third-party dependencies in their own layer, rebuilt only when the lock file changes (uv's
# pattern for workspaces: --frozen, since the members' pyproject files are not here yet).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace \
        --package "$SERVICE"

# Then the workspace's sources (.dockerignore keeps tests and caches out), installed as wheels
# so that the runtime image holds the virtualenv only; --locked checks uv.lock against them.
COPY shared shared
COPY services services
COPY deploy/local/pyproject.toml deploy/local/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package "$SERVICE"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --gid 10001 app && useradd --no-log-init --create-home --uid 10001 --gid 10001 app
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HTTP_PORT'] + '/healthz', timeout=2)"
# exec: uvicorn is PID 1 and gets the SIGTERM of `docker stop` and Kubernetes.
CMD ["/bin/sh", "-c", "exec uvicorn --factory \"$ASGI_APP\" --host 0.0.0.0 --port \"$HTTP_PORT\" --no-access-log"]

# The table: one stage per workspace service, chosen by SERVICE in the last line.
FROM runtime AS profile-svc
ENV ASGI_APP=profile_svc.app:create_app HTTP_PORT=8101
EXPOSE 8101

FROM runtime AS contact-svc
ENV ASGI_APP=contact_svc.app:create_app HTTP_PORT=8102
EXPOSE 8102

FROM runtime AS import-svc
ENV ASGI_APP=import_svc.app:create_app HTTP_PORT=8103
EXPOSE 8103

FROM runtime AS segment-svc
ENV ASGI_APP=segment_svc.app:create_app HTTP_PORT=8104
EXPOSE 8104 8114

FROM runtime AS log-svc
ENV ASGI_APP=log_svc.app:create_app HTTP_PORT=8105
EXPOSE 8105

FROM runtime AS console
ENV ASGI_APP=console.app:create_app HTTP_PORT=8100
EXPOSE 8100

# SERVICE must name one of the stages above (tests/deploy checks compose's and the workspace's).
FROM ${SERVICE}
