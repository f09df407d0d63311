# Image with all three binaries (hub, viewer-api, gateway) for compose.yaml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p hub -p viewer-api -p gateway

FROM debian:bookworm-slim
# fonts-wqy-microhei: the Chinese font the printed reports (PDF) are set in.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/hub /src/target/release/viewer-api /src/target/release/gateway /usr/local/bin/
