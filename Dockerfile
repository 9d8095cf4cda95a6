# One image for the service and both simulators; the command picks the role.
# Not built on the development machines (no Docker engine there).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin customs179

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/customs179 --create-home customs179
COPY --from=build /src/target/release/customs179 /usr/local/bin/customs179
COPY config/customs179.example.toml /etc/customs179/customs179.example.toml
USER customs179
WORKDIR /var/lib/customs179
ENTRYPOINT ["customs179"]
CMD ["--help"]
