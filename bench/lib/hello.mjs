// The reference of `npm run bench`: a Fastify hello-world (Fastify's own example: no logger, one
// JSON route), in its own process. Prints `listening <port>`.
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.get('/*', async () => ({ hello: 'world' }));
await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`listening ${app.server.address().port}\n`);
process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
