# The anyscope binary: static (CGO_ENABLED=0), on a distroless base, run as
# a non-root user (uid 65532). One image for every role; the command picks
# it (docker-compose.yml runs the central stack from it).
#
#   docker build -t anyscope .
#   docker run --rm -e ANYSCOPE_DB=… -p 8740:8740 anyscope collector --listen 0.0.0.0:8740
#
# The build stage's Go has go.mod's major.minor (a test in cmd/anyscope
# checks it), and the sources copied are every top-level folder holding Go
# packages (checked too), so nothing else (.git, bin/) enters the build.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY agent/ agent/
COPY analysis/ analysis/
COPY cmd/ cmd/
COPY collector/ collector/
COPY migrations/ migrations/
COPY web/ web/
ARG TARGETOS=linux
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/anyscope ./cmd/anyscope \
 && mkdir -p /out/lib/anyscope/spool

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/anyscope /usr/local/bin/anyscope
# An agent's state (spool_dir: /var/lib/anyscope/spool), owned by the
# non-root user so a volume mounted there starts writable. (The contents of
# /out/lib are copied, so /var/lib itself keeps its owner.)
COPY --from=build --chown=65532:65532 /out/lib/ /var/lib/
USER 65532:65532
EXPOSE 8740
# The health check asks $ANYSCOPE_HEALTHCHECK_URL; the default fits the
# collector. Other roles set their own (docker-compose.yml does):
# `web` http://127.0.0.1:8741/healthz, `analyze --every 30s --health-listen
# 127.0.0.1:8742` http://127.0.0.1:8742/healthz, `agent --metrics
# 127.0.0.1:9741` http://127.0.0.1:9741/metrics.
ENV ANYSCOPE_HEALTHCHECK_URL=http://127.0.0.1:8740/readyz
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/anyscope", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/anyscope"]
CMD ["collector", "--listen", "0.0.0.0:8740"]
