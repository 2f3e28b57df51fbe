/** Guest networking: guest-network-get-interfaces and guest-network-get-route. */
import type { FastifyInstance } from 'fastify';
import { GuestNetworkInterface, GuestNetworkRoute } from '../schemas/qga.js';
import { getListRoute } from './qga-get.js';

export default async function networkRoutes(app: FastifyInstance): Promise<void> {

  getListRoute(app, {
    url: '/vms/:vm/network/interfaces',
    operationId: 'getNetworkInterfaces',
    tag: 'network',
    summary: 'Guest network interfaces: addresses, MAC, statistics',
    command: 'guest-network-get-interfaces',
    key: 'interfaces',
    item: GuestNetworkInterface,
    listDescription: 'List of GuestNetworkInterface',
  });
  getListRoute(app, {
    url: '/vms/:vm/network/routes',
    operationId: 'getNetworkRoutes',
    tag: 'network',
    summary: "The guest's routing table (Linux guests, agent 9.1+)",
    command: 'guest-network-get-route',
    key: 'routes',
    item: GuestNetworkRoute,
    listDescription: 'List of route info of guest',
  });
}
