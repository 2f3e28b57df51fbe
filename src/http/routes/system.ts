/**
 * The guest's identity and load: guest-get-host-name, guest-get-timezone, guest-get-osinfo,
 * guest-get-load. Each returns a QGA object, sent as the agent gave it.
 */
import type { FastifyInstance } from 'fastify';
import { GuestHostName, GuestLoadAverage, GuestOSInfo, GuestTimezone } from '../schemas/qga.js';
import { getObjectRoute } from './qga-get.js';

export default async function systemRoutes(app: FastifyInstance): Promise<void> {

  getObjectRoute(app, {
    url: '/vms/:vm/hostname',
    operationId: 'getHostName',
    tag: 'system',
    summary: 'The host name of the guest (not necessarily fully qualified)',
    command: 'guest-get-host-name',
    schema: GuestHostName,
  });
  getObjectRoute(app, {
    url: '/vms/:vm/timezone',
    operationId: 'getTimezone',
    tag: 'system',
    summary: "The guest's time zone name and UTC offset",
    command: 'guest-get-timezone',
    schema: GuestTimezone,
  });
  getObjectRoute(app, {
    url: '/vms/:vm/os',
    operationId: 'getOsInfo',
    tag: 'system',
    summary: 'Guest operating system information (uname and os-release)',
    command: 'guest-get-osinfo',
    schema: GuestOSInfo,
  });
  getObjectRoute(app, {
    url: '/vms/:vm/load',
    operationId: 'getLoad',
    tag: 'system',
    summary: 'Guest load averages over 1, 5 and 15 minutes',
    command: 'guest-get-load',
    schema: GuestLoadAverage,
  });
}
