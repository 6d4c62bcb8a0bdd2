# syntax=docker/dockerfile:1
# kiln's own image: `kiln buildkitd` by default, `kiln daemon` for the runner.
# Build: kiln build -t registry.example/kiln:dev . (or docker build / buildctl).

FROM rust:1-bookworm AS build
# git2 builds libgit2 with https, which needs OpenSSL's headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kiln \
 && install -m 0755 target/release/kiln /usr/local/bin/kiln

FROM debian:bookworm-slim
# runc runs build steps (rootless); uidmap gives newuidmap/newgidmap for the user namespace;
# git and nodejs run workflow steps and JavaScript actions; tini reaps build processes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      runc uidmap git ca-certificates nodejs tini libssl3 \
 && rm -rf /var/lib/apt/lists/*
# UID/GID 1000 with 65536 subordinate ids, so image users other than root are mapped too.
RUN groupadd --gid 1000 kiln \
 && useradd --uid 1000 --gid 1000 --home-dir /home/kiln --create-home --shell /bin/sh kiln \
 && echo "kiln:100000:65536" > /etc/subuid \
 && echo "kiln:100000:65536" > /etc/subgid \
 && mkdir -p /var/lib/kiln /run/kiln /etc/kiln/certs \
 && chown kiln:kiln /var/lib/kiln /run/kiln /etc/kiln/certs
COPY --from=build /usr/local/bin/kiln /usr/local/bin/kiln
ENV KILN_ROOT=/var/lib/kiln
VOLUME /var/lib/kiln
USER 1000:1000
WORKDIR /home/kiln
EXPOSE 1235
ENTRYPOINT ["tini", "--", "kiln"]
CMD ["buildkitd", "--addr", "tcp://0.0.0.0:1235", "--addr", "unix:///run/kiln/buildkit.sock", "--tls-from-env", "--health-addr", "0.0.0.0:8081"]
