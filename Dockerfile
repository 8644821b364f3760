# syntax=docker/dockerfile:1
# The csext worker image: csext installed as a normal (non-editable) package, plus the bundled
# extensions as the default registry. docker-compose.yml runs it next to RabbitMQ; by hand:
#   docker build -t csext . && docker run --init -e CSEXT_AMQP_URL=amqp://... csext
# Use --init (compose: `init: true`) so orphaned extension processes are reaped.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git is a runtime requirement: the extension store keeps the registry in a Git repository.
# A registry mounted from the host belongs to another uid; safe.directory lets git read it.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && git config --system safe.directory '*'

# pyproject.toml maps each part folder (schemas/ handlers/ worker/ store/ bridges/ cli/ sdk/) into csext.*, so install from a copy of
# the repository root layout, then drop the sources.
WORKDIR /tmp/csext-src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY handlers/ handlers/
COPY worker/ worker/
COPY store/ store/
COPY bridges/ bridges/
COPY cli/ cli/
COPY sdk/ sdk/
RUN pip install . && cd / && rm -rf /tmp/csext-src

RUN groupadd --system --gid 10001 csext \
    && useradd --system --uid 10001 --gid csext --create-home --home-dir /home/csext \
        --shell /usr/sbin/nologin csext
COPY --chown=csext:csext extensions/ /srv/csext/extensions/

ENV CSEXT_REGISTRY=/srv/csext/extensions
WORKDIR /srv/csext
USER csext

ENTRYPOINT ["csext"]
CMD ["worker"]
