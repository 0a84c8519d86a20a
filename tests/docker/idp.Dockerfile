# The local OpenID Provider (oidc-provider, tests/idp/server.mjs) for the compose mesh: Node.js,
# the libraries it links, the IdP's code and its npm packages, run as user 10001. Staged by
# `cargo xtask compose` (target/compose/images/idp/).
FROM scratch
COPY rootfs/ /
USER 10001:10001
WORKDIR /app
ENTRYPOINT ["/usr/local/bin/node", "server.mjs"]
