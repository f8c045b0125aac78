# syntax=docker/dockerfile:1
#
# heapdel's container image: a static binary on distroless, run as non-root.
#
#   docker build --build-arg VERSION=v1.2.3 -t ghcr.io/heapdel/heapdel:v1.2.3 .
#
# The Helm chart (charts/heapdel) runs it with a read-only root filesystem.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
# Dependencies first, so that a source change reuses this layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags "-X main.version=${VERSION}" -o /out/heapdel ./cmd/heapdel

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="heapdel" \
      org.opencontainers.image.description="Turns data-subject deletion commands on NATS JetStream into completed deletions in Heap" \
      org.opencontainers.image.source="https://github.com/heapdel/heapdel" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/heapdel /heapdel
USER 65532:65532
# /metrics, /healthz and /readyz (HEAPDEL_HTTP_ADDR).
EXPOSE 9090
ENTRYPOINT ["/heapdel", "run"]
