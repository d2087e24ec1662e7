# vfxt-ingest: one image for the operator, the scan pod and the copy workers (the operator starts its pods
# from its own image unless spec.worker.image says otherwise).
#
# Standard build (needs network access to the two base images):
#   docker build -t vfxt-ingest:0.1.0 .
# Base images are build arguments so that air-gapped builds can use mirrored or locally made images
# (tests/packaging/docker.sh makes both locally and builds without any registry).
#
# The runtime user is uid/gid 65532 ("nonroot", as in distroless). That is right for the operator and for
# workers that copy without preserving owners, or from a root-squashed export. A worker must run as root
# (spec.worker.securityContext.runAsUser: 0, which is the operator's default for workers) when it preserves
# uid/gid: chown needs CAP_CHOWN, and that only works on an export with root squash OFF (no_root_squash);
# with root squash on, root is mapped to nobody and cannot read every file or set owners anyway.

ARG BUILDER_IMAGE=docker.io/library/rust:1.89-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where /vfxt-ingest comes from: the `build` stage below (default), or an image holding a binary built
# elsewhere (CI: tests/packaging/docker.sh builds on the host and passes BINARY_IMAGE).
ARG BINARY_IMAGE=build

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# The release profile keeps line tables for backtraces (~70 MiB of the binary); the image drops them and
# keeps the symbols, so a panic still names its functions.
RUN cargo build --release --locked -p vfxt-ingest \
    && install -m 0755 target/release/vfxt-ingest /vfxt-ingest \
    && strip --strip-debug /vfxt-ingest

FROM ${BINARY_IMAGE} AS binary

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="vfxt-ingest" \
      org.opencontainers.image.description="Parallel ingest into multi-node NFS cache clusters (Avere vFXT, Azure HPC Cache): Kubernetes operator, scan and copy workers in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/vfxt-ingest"
COPY --from=binary /vfxt-ingest /usr/local/bin/vfxt-ingest
# Numeric, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/vfxt-ingest"]
CMD ["--help"]
