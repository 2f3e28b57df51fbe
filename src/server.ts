/**
 * `node dist/server.js [--config FILE] [--pretty]`: the gateway, as `qga-gateway serve` (kept for
 * existing scripts and images; cli/serve.ts does the work).
 */
import { main } from './cli/main.js';

const args = process.argv.slice(2);
main(args[0] === '--version' || args[0] === '-V' ? args : ['serve', ...args]);
