# qga-gateway: multi-stage build; the runtime image holds only the compiled JS and prod deps.
# Agent sockets live on the host: mount their folder (e.g. -v /var/lib/libvirt/qemu/channel:/sockets)
# and name them in the config file (-v ./config:/app/config).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
# only src/ is compiled; the QGA simulator (sim/) and tests are dev tools and stay out of the image
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config ./config
COPY openapi ./openapi
# freeze leases of the embedded store (config/default.yaml freeze.stateFile); mount a volume to keep them
RUN mkdir -p /app/var && chown node:node /app/var
USER node
EXPOSE 8080
# Without auth.tokens the gateway only binds loopback; in a container, configure tokens and HOST=0.0.0.0.
CMD ["node", "dist/server.js", "--config", "/app/config/default.yaml"]
