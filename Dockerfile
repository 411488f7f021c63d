# The operator image: a release build, run on a distroless base as a non-root user.
#   docker build -t ghcr.io/replicant-dev/replicant:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# protoc builds the etcd client.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked --bin replicant

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/replicant /usr/local/bin/replicant
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/replicant"]
CMD ["operator"]
