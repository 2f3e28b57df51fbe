/**
 * The one description of the gateway's configuration: every key, its type, range and default.
 * src/config/load.ts validates a YAML file plus environment overrides against it and refuses to
 * start on any bad key, naming all of them at once.
 */
import { Type, type Static } from 'typebox';

const Ms = (def: number, min = 0, max = 86_400_000) => Type.Integer({ minimum: min, maximum: max, default: def });

/**
 * No control characters (NUL above all) in a socket path or host: the kernel stops a path at its
 * first NUL, so `/run/a.sock\u0000x` would connect to another VM's socket while comparing unequal
 * to it (an alias past ENDPOINT_IN_USE, the VM globs and the freeze leases).
 */
const NO_CONTROL = '^[^\\u0000-\\u001f\\u007f]+$';

export const EndpointSchema = Type.Union([
  Type.Object(
    { type: Type.Literal('unix'), path: Type.String({ minLength: 1, maxLength: 4096, pattern: NO_CONTROL }) },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      type: Type.Literal('tcp'),
      host: Type.String({ minLength: 1, maxLength: 255, pattern: NO_CONTROL }),
      port: Type.Integer({ format: 'int32', minimum: 1, maximum: 65535 }),
    },
    { additionalProperties: false },
  ),
]);

export const VM_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';

/** `host:port` or `host:*`; an IPv6 host in brackets (`[::1]:4444`) */
export const TCP_ENDPOINT_PATTERN = '^(\\[[0-9A-Fa-f:.]+\\]|[^\\s:\\[\\]]+):(\\*|[0-9]{1,5})$';

/** Where hypervisors put the guest agent sockets: Proxmox VE (qemu-server) and libvirt. */
export const DEFAULT_SOCKET_ROOTS: readonly string[] = ['/var/run/qemu-server', '/run/qemu-server', '/var/lib/libvirt/qemu/channel'];

/** bounds of a VM's labels (config, the registration API, Proxmox discovery) */
export const MAX_LABELS = 64;
export const MAX_LABEL_KEY = 128;
export const MAX_LABEL_VALUE = 256;

/**
 * A VM's labels: at most MAX_LABELS, keys of 1–MAX_LABEL_KEY characters without control characters
 * or `=` (the list filter `label=key=value` splits at the first `=`: such a key could never be
 * matched), values of at most MAX_LABEL_VALUE.
 */
export const LabelsSchema = Type.Record(Type.String(), Type.String({ maxLength: MAX_LABEL_VALUE }), {
  maxProperties: MAX_LABELS,
  propertyNames: { minLength: 1, maxLength: MAX_LABEL_KEY, pattern: '^[^\\u0000-\\u001f\\u007f=]+$' },
  description: `Free-form labels: at most ${MAX_LABELS}, keys of 1–${MAX_LABEL_KEY} characters without control characters or "=", values of at most ${MAX_LABEL_VALUE}`,
});

export const VmEntrySchema = Type.Object(
  {
    name: Type.String({ pattern: VM_NAME_PATTERN }),
    endpoint: EndpointSchema,
    labels: Type.Optional(LabelsSchema),
    /** this VM's idle release (overrides agent.idleReleaseMs); 0 = keep the socket */
    idleReleaseMs: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400_000 })),
  },
  { additionalProperties: false },
);

export const ScopeSchema = Type.Union([Type.Literal('read'), Type.Literal('write'), Type.Literal('admin')]);

/** a token's VM globs: at most this many, each at most this long (a VM name is at most 128) */
export const MAX_TOKEN_GLOBS = 64;
export const MAX_TOKEN_GLOB = 128;

/**
 * a token's name (in logs, audit records, metrics): no control characters, C0 or C1, and not the
 * Unicode line and paragraph separators (a newline, NEL or U+2028 would forge a log line for a
 * reader that splits on it)
 */
export const TOKEN_NAME_PATTERN = '^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]+$';

export const TokenSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 64, pattern: TOKEN_NAME_PATTERN }),
    /**
     * exactly one of token (literal, discouraged), tokenEnv (environment variable), tokenFile, or
     * tokenSha256 (the hex SHA-256 of the token: the config holds no secret; `qga-gateway token new`)
     */
    token: Type.Optional(Type.String({ minLength: 16 })),
    tokenEnv: Type.Optional(Type.String({ minLength: 1 })),
    tokenFile: Type.Optional(Type.String({ minLength: 1 })),
    tokenSha256: Type.Optional(Type.String({ pattern: '^[0-9a-fA-F]{64}$' })),
    scopes: Type.Array(ScopeSchema, { minItems: 1, uniqueItems: true }),
    /**
     * VM name globs this token may reach (`*` any run, `?` one character); absent = all. Bounded so
     * that the principal a cluster node carries to another (cluster/hop.ts, under 16 KiB) always fits.
     */
    vms: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: MAX_TOKEN_GLOB, pattern: '^[A-Za-z0-9._*?-]+$' }), { minItems: 1, maxItems: MAX_TOKEN_GLOBS })),
  },
  { additionalProperties: false },
);

export const ConfigSchema = Type.Object(
  {
    server: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1' }),
        port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
        /** JSON bodies; streaming uploads have their own limit in files */
        bodyLimitBytes: Type.Integer({ minimum: 1024, maximum: 256 * 1024 * 1024, default: 1024 * 1024 }),
        trustProxy: Type.Boolean({ default: false }),
        /**
         * Host header names (no port) the gateway answers to; others get 421 MISDIRECTED_REQUEST
         * (DNS rebinding). Unset: localhost names, the bound address and the machine's host name;
         * with a wildcard bind (0.0.0.0, ::) unset means any Host (warned at start-up).
         */
        allowedHosts: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 253 }), { uniqueItems: true })),
        /** Origins (scheme://host[:port]) whose browser requests are accepted; others get 403 ORIGIN_FORBIDDEN */
        allowedOrigins: Type.Array(Type.String({ minLength: 1, maxLength: 2048 }), { default: [], uniqueItems: true }),
        /** graceful shutdown: how long in-flight requests get before channels are destroyed */
        shutdownGraceMs: Ms(10_000),
        /** a client must have sent all its request headers within this (slow-header clients are cut); 0 = no limit */
        headersTimeoutMs: Ms(10_000),
        /**
         * headers plus a JSON body must have arrived within this, else the connection is closed
         * (no answer: the client is still sending); 0 = no limit. The streaming file routes are bounded by files.noProgressTimeoutMs instead.
         */
        requestTimeoutMs: Ms(30_000),
        /** an idle keep-alive connection is closed after this */
        keepAliveTimeoutMs: Ms(5_000, 1),
        /** open HTTP connections at most; further ones are refused at accept; 0 = no limit */
        maxConnections: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 10_000 }),
        /**
         * HTTPS: PEM certificate (chain) and private key files; absent = plain HTTP. The files are
         * read again on SIGHUP (certificate renewal without a restart).
         */
        tls: Type.Optional(
          Type.Object(
            { cert: Type.String({ minLength: 1, maxLength: 4096 }), key: Type.String({ minLength: 1, maxLength: 4096 }) },
            { additionalProperties: false },
          ),
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    log: Type.Object(
      {
        level: Type.Union(
          [
            Type.Literal('fatal'),
            Type.Literal('error'),
            Type.Literal('warn'),
            Type.Literal('info'),
            Type.Literal('debug'),
            Type.Literal('trace'),
            Type.Literal('silent'),
          ],
          { default: 'info' },
        ),
        /**
         * human-readable lines (pino-pretty) instead of JSON: `auto` = when stdout is a terminal;
         * true/false force it (the CLI's --pretty sets true)
         */
        pretty: Type.Union([Type.Boolean(), Type.Literal('auto')], { default: 'auto' }),
      },
      { additionalProperties: false, default: {} },
    ),
    auth: Type.Object(
      {
        tokens: Type.Array(TokenSchema, { default: [] }),
        /**
         * Without tokens every caller is anonymous with these scopes (read only by default: any
         * local process or web page could otherwise shut VMs down). The server then refuses to
         * listen on anything but loopback. Granting write or admin is warned at start-up.
         */
        anonymousScopes: Type.Array(ScopeSchema, { default: ['read'], uniqueItems: true }),
      },
      { additionalProperties: false, default: {} },
    ),
    /**
     * Fair admission (src/http/plugins/limits.ts), per principal: the token's name, or the client
     * address (request.ip) for anonymous callers. Over a limit → 429 RATE_LIMITED with
     * Retry-After. Thaws (DELETE /v1/vms/{vm}/fsfreeze, DELETE /v1/freeze-groups/{id}) and the
     * /healthz and /readyz probes are never refused by these limits.
     */
    limits: Type.Object(
      {
        /** requests of one principal in flight at once (queued for an agent, streaming a file …); 0 = no limit */
        perPrincipalConcurrency: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 256 }),
        /**
         * a 429 for overload (QUEUE_FULL, RATE_LIMITED) is answered this long after the refusal
         * (src/http/refusal-hold.ts: one shared timer, at most one held answer per connection and
         * 10,000 in all, beyond which answers go at once; sent at once on shutdown), so clients
         * that retry at once come back paced instead of taking the event loop; 0 = at once
         */
        refusalHoldMs: Ms(250, 0, 10_000),
        /**
         * requests of one principal per time window (@fastify/rate-limit); absent = no rate limit.
         * With store.type redis the counters live in that Redis, shared by every gateway on it.
         */
        rate: Type.Optional(
          Type.Object(
            {
              /** requests allowed per window */
              max: Type.Integer({ minimum: 1, maximum: 100_000_000 }),
              /** the window */
              timeWindowMs: Ms(60_000, 1),
            },
            { additionalProperties: false },
          ),
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    agent: Type.Object(
      {
        /** commands waiting per VM behind the one in flight */
        maxQueue: Type.Integer({ minimum: 1, maximum: 100_000, default: 64 }),
        /**
         * one agent reply line; larger lines are dropped and the channel resyncs. The default
         * holds the largest reply an agent sends on its own: guest-exec-status with both streams
         * at the agent's 16 MiB capture cap is ≈43 MiB of base64 — and that reply, once lost, is
         * gone (the agent deletes the record as it sends it).
         */
        maxReplyBytes: Type.Integer({ minimum: 4096, maximum: 512 * 1024 * 1024, default: 64 * 1024 * 1024 }),
        /**
         * all channels' partially received reply lines together; the line that would take the
         * total above it is dropped unbuffered (502 REPLY_TOO_LARGE) and its channel resynced.
         * At least agent.maxReplyBytes.
         */
        maxBufferedBytes: Type.Integer({ minimum: 4096, maximum: 16 * 1024 * 1024 * 1024, default: 256 * 1024 * 1024 }),
        connectTimeoutMs: Ms(3_000, 1),
        syncTimeoutMs: Ms(5_000, 1),
        /**
         * release a channel's socket after this long with nothing to do (QEMU serves one client per
         * socket: `qm agent`, vzdump and libvirt wait at most this long behind us); 0 = never
         */
        idleReleaseMs: Ms(2_000),
        /**
         * a guest-ping on a new socket skips reading guest-info when the VM's copy (read on an
         * earlier socket) is younger than this; every other command reads it on each new socket;
         * 0 = read it on every new socket
         */
        infoMaxAgeMs: Ms(60_000),
        maxOpen: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 1000 }),
        backoffInitialMs: Ms(100, 1),
        backoffMaxMs: Ms(5_000, 1),
        /** one light probe (a sync handshake, socket released at once) of every VM per interval; 0 = off */
        probeIntervalMs: Ms(60_000),
        /**
         * a VM marked down is retried after 250 ms, doubling up to this (and at once when its
         * discovered socket appears again): how soon after the agent is back calls stop failing fast
         */
        downRetryMaxMs: Ms(1_000, 1),
        /** GET /v1/vms/{vm}/wait: the longest `timeout` a caller may ask for */
        waitMaxSeconds: Type.Integer({ minimum: 1, maximum: 3_600, default: 300 }),
        /** overrides of the catalog's timeout classes (src/qga/commands.ts) */
        timeouts: Type.Object(
          {
            fast: Type.Optional(Ms(5_000, 1)),
            normal: Type.Optional(Ms(10_000, 1)),
            slow: Type.Optional(Ms(60_000, 1)),
            freeze: Type.Optional(Ms(300_000, 1)),
            long: Type.Optional(Ms(600_000, 1)),
          },
          { additionalProperties: false, default: {} },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    store: Type.Object(
      {
        type: Type.Union([Type.Literal('memory'), Type.Literal('redis')], { default: 'memory' }),
        /** redis://[user:password@]host:port[/db] or rediss:// (TLS); REDIS_URL overrides */
        redisUrl: Type.Optional(Type.String({ minLength: 1 })),
        /** Redis Sentinel: the sentinels (host:port) and the monitored master's name, instead of redisUrl */
        sentinels: Type.Optional(Type.Array(Type.String({ minLength: 3, pattern: '^[^\\s:]+:[0-9]{1,5}$' }), { minItems: 1, maxItems: 32 })),
        sentinelName: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
        /** Redis Cluster: seed nodes (host:port), instead of redisUrl */
        clusterNodes: Type.Optional(Type.Array(Type.String({ minLength: 3, pattern: '^[^\\s:]+:[0-9]{1,5}$' }), { minItems: 1, maxItems: 64 })),
        /** ACL user and a file holding the password (for sentinels / cluster; a redisUrl may carry them itself) */
        username: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
        passwordFile: Type.Optional(Type.String({ minLength: 1 })),
        /** TLS to Redis (implied by rediss://): a CA bundle, and a client certificate and key for mutual TLS */
        tls: Type.Optional(
          Type.Object(
            {
              caFile: Type.Optional(Type.String({ minLength: 1 })),
              certFile: Type.Optional(Type.String({ minLength: 1 })),
              keyFile: Type.Optional(Type.String({ minLength: 1 })),
              /** the server name checked against the certificate, when it differs from the host connected to */
              servername: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
            },
            { additionalProperties: false },
          ),
        ),
        keyPrefix: Type.String({ default: 'qga:' }),
        commandTimeoutMs: Ms(2_000, 1),
      },
      { additionalProperties: false, default: {} },
    ),
    registry: Type.Object(
      {
        /** POST /v1/vms may add VMs at run time (admin scope); they live in the store */
        allowApiRegistration: Type.Boolean({ default: true }),
        /** directories scanned for agent sockets: every `<name><suffix>` socket becomes a VM */
        directories: Type.Array(
          Type.Object(
            {
              path: Type.String({ minLength: 1 }),
              suffix: Type.String({ default: '.sock' }),
            },
            { additionalProperties: false },
          ),
          { default: [] },
        ),
        /**
         * Directories an API-registered unix socket must resolve into (real path, symlinks
         * followed). Unset: the hypervisors' own directories (DEFAULT_SOCKET_ROOTS) plus the
         * directories of the `vms:` sockets and of `registry.directories`; [] = no unix socket.
         */
        allowedSocketRoots: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
        /** TCP endpoints API registration may use, `host:port` or `host:*`; none by default */
        allowedTcpEndpoints: Type.Array(Type.String({ pattern: TCP_ENDPOINT_PATTERN }), { default: [] }),
        /**
         * Discovery presets. `proxmox`: every `<vmid>.qga` socket in `registry.proxmox.socketDir` is
         * VM `<vmid>`, labelled `pve.name` and `pve.tags` from `<configDir>/<vmid>.conf`; a VM whose
         * config says `agent: 0` (or `enabled=0`) is skipped.
         */
        presets: Type.Array(Type.Literal('proxmox'), { default: [] }),
        proxmox: Type.Object(
          {
            socketDir: Type.String({ minLength: 1, default: '/var/run/qemu-server' }),
            configDir: Type.String({ minLength: 1, default: '/etc/pve/qemu-server' }),
          },
          { additionalProperties: false, default: {} },
        ),
        /** discovery folders are watched; this full rescan is the safety net (0 = watch only) */
        rescanIntervalMs: Ms(30_000, 0),
      },
      { additionalProperties: false, default: {} },
    ),
    vms: Type.Array(VmEntrySchema, { default: [] }),
    freeze: Type.Object(
      {
        defaultTtlSeconds: Type.Integer({ minimum: 1, maximum: 86_400, default: 300 }),
        maxTtlSeconds: Type.Integer({ minimum: 1, maximum: 86_400, default: 3_600 }),
        /** renewals never extend a freeze past this, counted from the freeze */
        maxTotalSeconds: Type.Integer({ minimum: 1, maximum: 86_400, default: 7_200 }),
        sweepIntervalMs: Ms(5_000, 100),
        /**
         * Embedded (memory) store only: leases are kept in this file so that a gateway killed while
         * a VM is frozen thaws it when it starts again. Unset: loadConfig resolves it at start to
         * `freeze-leases.json` in the state directory (defaultStateDir in load.ts:
         * $QGA_GATEWAY_STATE_DIR, else $STATE_DIRECTORY (systemd), else /var/lib/qga-gateway when
         * writable, else ~/.local/state/qga-gateway). Relative paths are resolved against the
         * working directory. Ignored with Redis.
         */
        stateFile: Type.Optional(Type.String({ minLength: 1, maxLength: 4096 })),
        /**
         * Redis only: on SIGTERM/SIGINT leave the leases this process holds to the other replicas'
         * sweepers (thawed by their deadline) instead of thawing them. Off: a shutdown thaws them.
         */
        handoverOnShutdown: Type.Boolean({ default: false }),
        /** VMs in one freeze group (POST /v1/freeze-groups); their freezes run in parallel */
        maxGroupVms: Type.Integer({ minimum: 1, maximum: 1024, default: 64 }),
        /** thaw a VM found frozen with no lease of ours (frozen outside the gateway) after this long, audited; 0 = never */
        externalThawAfterMs: Ms(0),
      },
      { additionalProperties: false, default: {} },
    ),
    exec: Type.Object(
      {
        /** POST /exec `wait` above this → 400 */
        maxWaitSeconds: Type.Integer({ minimum: 0, maximum: 3_600, default: 300 }),
        /** stdin bytes (after base64 decoding) above this → 413; the agent takes 64 MiB per request */
        maxInputBytes: Type.Integer({ minimum: 0, maximum: 48 * 1024 * 1024, default: 8 * 1024 * 1024 }),
        /** how long a collected final status stays readable through GET /exec/{pid} */
        resultTtlSeconds: Type.Integer({ minimum: 1, maximum: 86_400, default: 600 }),
        resultCacheMaxEntries: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 1_000 }),
        /** total base64 output kept across all cached results */
        resultCacheMaxBytes: Type.Integer({ minimum: 1024, maximum: 4 * 1024 * 1024 * 1024, default: 64 * 1024 * 1024 }),
        /** wait mode polls guest-exec-status from this interval, backing off (×1.5) to pollMaxMs */
        pollInitialMs: Ms(50, 1, 60_000),
        pollMaxMs: Ms(1_000, 1, 60_000),
        /** a process started through us and not polled for this long is polled by the reaper … */
        reaperIntervalMs: Ms(10_000, 100),
        /** … backing off (×2) to this for long-running processes */
        reaperMaxIntervalMs: Ms(300_000, 100),
        /** processes tracked for reaping; beyond it the oldest are given up */
        maxTrackedPids: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 10_000 }),
      },
      { additionalProperties: false, default: {} },
    ),
    files: Type.Object(
      {
        /** bytes per guest-file-read of a download (its base64 reply must fit agent.maxReplyBytes) */
        readChunkBytes: Type.Integer({ minimum: 4096, maximum: 48_000_000, default: 1024 * 1024 }),
        /** bytes per guest-file-write of an upload (the agent takes 64 MiB of JSON per request) */
        writeChunkBytes: Type.Integer({ minimum: 4096, maximum: 32 * 1024 * 1024, default: 1024 * 1024 }),
        /** PUT /files/content body cap; 0 = no limit */
        maxUploadBytes: Type.Integer({ minimum: 0, default: 0 }),
        /** `count` cap of POST /files/handles/{handle}/read */
        maxRawReadBytes: Type.Integer({ minimum: 4096, maximum: 48_000_000, default: 8 * 1024 * 1024 }),
        /** decoded bytes cap of POST /files/handles/{handle}/write */
        maxRawWriteBytes: Type.Integer({ minimum: 4096, maximum: 32 * 1024 * 1024, default: 8 * 1024 * 1024 }),
        /** handles open through the raw routes, per VM */
        maxHandlesPerVm: Type.Integer({ minimum: 1, maximum: 100_000, default: 128 }),
        /** a raw-route handle unused for this long is closed by the reaper */
        handleIdleSeconds: Type.Integer({ minimum: 1, maximum: 86_400, default: 300 }),
        handleReaperIntervalMs: Ms(30_000, 100),
        /** deadline of a guest-file-close on cleanup paths (never tied to the caller) */
        closeTimeoutMs: Ms(10_000, 1),
        /** a streamed upload or download with no byte moving for this long is aborted and its handle closed; 0 = never */
        noProgressTimeoutMs: Ms(60_000),
      },
      { additionalProperties: false, default: {} },
    ),
    metrics: Type.Object(
      {
        /** qga_agent_up and qga_vm_frozen per VM (label vm); false: one count each, for very large fleets */
        perVmLabels: Type.Boolean({ default: true }),
      },
      { additionalProperties: false, default: {} },
    ),
    cluster: Type.Object(
      {
        /**
         * The URL clients and other gateways reach this one at (scheme://host[:port]). Its host is
         * always an allowed Host header name, whatever server.allowedHosts says.
         */
        advertiseUrl: Type.Optional(Type.String({ minLength: 8, maxLength: 2048, pattern: '^https?://[^/?#\\s]+/?$' })),
        /** cluster mode (needs store.type redis and advertiseUrl): membership, VM directory and forwarding on the store's Redis */
        enabled: Type.Boolean({ default: false }),
        /** this node's id (default: the host name) */
        id: Type.Optional(Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' })),
        /** a node that has not heartbeated for this long is gone: its VMs answer 503 NODE_UNAVAILABLE */
        heartbeatTtlMs: Ms(10_000, 1_000, 600_000),
        /** how often a node heartbeats and republishes its VMs (at most a third of heartbeatTtlMs) */
        heartbeatIntervalMs: Ms(3_000, 100, 200_000),
        /** a file holding the secret every node shares (at least 32 characters): node-to-node calls carry it */
        secretFile: Type.Optional(Type.String({ minLength: 1 })),
        /** a forwarded request whose node sends no response headers for this long (beyond the route's agent timeout and the request's own wait) answers 503 NODE_UNAVAILABLE */
        forwardTimeoutMs: Ms(30_000, 100, 3_600_000),
      },
      { additionalProperties: false, default: {} },
    ),
  },
  { additionalProperties: false },
);

export type Config = Static<typeof ConfigSchema>;
export type VmEntry = Static<typeof VmEntrySchema>;
export type TokenConfig = Static<typeof TokenSchema>;
export type Scope = Static<typeof ScopeSchema>;
