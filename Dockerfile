# The amibus image: ami-ingest, ami-actor, ami-state and amisim as static binaries on an
# empty base. No shell, no libc, no package manager, no CA bundle; it runs as
# the unprivileged user 65532 and writes nothing, so it works under
# readOnlyRootFilesystem (see deploy/helm/amibus).
#
# Nothing is pulled from a registry: the binaries are built on the host first,
# with CGO_ENABLED=0 so that they need no libc, then copied in.
#
#   make image                      # both steps; IMAGE=amibus:<tag> to choose the tag
#
# or by hand, from the repository root:
#
#   CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/ ./cmd/ami-ingest ./cmd/ami-actor ./cmd/ami-state ./cmd/amisim
#   tar -c Dockerfile bin/ami-ingest bin/ami-actor bin/ami-state bin/amisim | docker build -t amibus:0.1.0 -
#
# (`docker build -t amibus:0.1.0 .` works too, but sends the whole working tree
# as the build context; the tar sends the five files the build reads.)
#
# The entry point is ami-ingest; run the others with --entrypoint /ami-actor,
# /ami-state or /amisim (the Helm chart sets the command of each container). TLS towards NATS
# or a PBX needs the CA in the configuration (nats.tls.ca_file,
# nodes[].tls.ca_file): the image has no system roots.
FROM scratch

ARG VERSION=dev
LABEL org.opencontainers.image.title="amibus" \
      org.opencontainers.image.description="Asterisk Manager Interface of a PBX fleet on NATS JetStream" \
      org.opencontainers.image.source="https://github.com/amibus/amibus" \
      org.opencontainers.image.version="${VERSION}"

COPY bin/ami-ingest bin/ami-actor bin/ami-state bin/amisim /

# Numeric, because scratch has no /etc/passwd; the chart's securityContext uses
# the same ids (runAsNonRoot needs a numeric user to verify).
USER 65532:65532

# ami-ingest's, ami-actor's and ami-state's /metrics, /healthz and /readyz (http.listen).
EXPOSE 9090 9091 9092

ENTRYPOINT ["/ami-ingest"]
