# Static anyscope binary on a minimal base.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/anyscope ./cmd/anyscope

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/anyscope /usr/local/bin/anyscope
ENTRYPOINT ["/usr/local/bin/anyscope"]
