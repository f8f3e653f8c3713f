/**
 * The seam between the root daemon and the operating system: the TUN device,
 * addresses and routes. Linux is implemented and tested here; macOS (utun)
 * and Windows (wintun) implement the same interface.
 */
export interface TunDevice {
  readonly name: string;
  /** Start delivering packets; each buffer is only valid during the call. */
  start(onPacket: (pkt: Buffer) => void): void;
  /** Write one packet; false when the kernel refused it (it is dropped). */
  write(pkt: Buffer): boolean;
  close(): void;
  readonly stats: { read: number; written: number; dropped: number };
}

import type { Route } from '../../../src/core/route-plan';
export type { Route };

export type TunReader = 'event-loop' | 'poll';

export interface Platform {
  /** reader: how packets are read (RDBG_TUN_READER); the event loop's epoll unless `poll` */
  openTun(name: string, reader?: TunReader): TunDevice;
  /** Its addresses, MTU and queue length, up, and `routes` (CIDRs) through it: all at once. */
  configureTun(name: string, opts: { addresses: string[]; mtu: number; txqueuelen: number; routes: string[] }): void;
  addRoute(cidr: string, dev: string, via?: string): void;
  deleteRoute(cidr: string, dev?: string): void;
  routes(): Route[];
  /** The route the kernel would use for an address, before the TUN exists. */
  routeTo(ip: string): Route | undefined;
  linkExists(name: string): boolean;
  deleteLink(name: string): void;
}
