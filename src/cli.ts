#!/usr/bin/env node
/** The `qga-gateway` command (package.json bin): see cli/main.ts. */
import { main } from './cli/main.js';

main();
