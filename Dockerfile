# qga-gateway: multi-stage build; the runtime image holds only the compiled JS and prod deps.
#
#   docker build -t qga-gateway .
#
# The agent sockets live on the host: mount their directories at the same paths, so that the
# default socket roots (registry.allowedSocketRoots) and `registry.directories` entries apply:
#   Proxmox VE:  -v /var/run/qemu-server:/var/run/qemu-server       (<vmid>.qga)
#   libvirt:     -v /var/lib/libvirt/qemu/channel:/var/lib/libvirt/qemu/channel
# Who may connect: Proxmox's sockets are root-owned, mode 0755, so only uid 0 can open them: run
# with  --user 0:0 --cap-drop ALL --security-opt no-new-privileges  (root without capabilities
# reaches root-owned files only). libvirt's belong to the qemu user: --user <uid of libvirt-qemu>:<gid of kvm>
# --group-add 0 (group root writes the state directory below; without it the embedded store cannot
# write its lease file and the gateway does not start).
# The default user (node, uid 1000) opens neither; it suits VMs reached over TCP.
#
# Configuration: mount a file and name it (-v ./qga-gateway.yaml:/etc/qga-gateway/config.yaml:ro
# ... serve --config /etc/qga-gateway/config.yaml), or set HOST, PORT, LOG_LEVEL, REDIS_URL. Without
# auth.tokens the gateway binds loopback only: configure tokens (tokenSha256) and HOST=0.0.0.0.
# Freeze leases of the embedded store are kept in /var/lib/qga-gateway (a volume).
# See contrib/docker-compose.yml for the gateway with Redis.

FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
# only src/ is compiled; the QGA simulator (sim/) and tests are dev tools and stay out of the image
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    QGA_GATEWAY_STATE_DIR=/var/lib/qga-gateway
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
COPY openapi ./openapi
# the state directory is group root and 0770: writable by the default user (node) and by uid 0 run
# without capabilities (--user 0:0 --cap-drop ALL), which passes the group check only
RUN mkdir -p /var/lib/qga-gateway \
    && chown node:root /var/lib/qga-gateway \
    && chmod 0770 /var/lib/qga-gateway \
    && ln -s /app/dist/cli.js /usr/local/bin/qga-gateway
VOLUME ["/var/lib/qga-gateway"]
USER node
EXPOSE 8080
# slim images have no curl: Node's fetch asks /readyz (lease store reachable) on PORT (a port set in
# the config file needs PORT as well). With TLS, set QGA_HEALTHCHECK_URL=https://127.0.0.1:8080/readyz
# and NODE_EXTRA_CA_CERTS for a private CA.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch(process.env.QGA_HEALTHCHECK_URL || 'http://127.0.0.1:' + (process.env.PORT || 8080) + '/readyz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "/app/dist/cli.js"]
CMD ["serve", "--config", "/app/config/default.yaml"]
