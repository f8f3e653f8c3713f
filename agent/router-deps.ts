import type { InterceptTable } from './intercept-table';
import type { ManagerLink } from './manager-link';
import type { MirrorQueue } from './mirror-queue';
import type { AppUpstream, DivertPools } from './upstreams';

/** What the HTTP routers and the port listener share. */
export interface RouterDeps {
  table: InterceptTable;
  link: ManagerLink;
  app: AppUpstream;
  pools: DivertPools;
  mirrors: MirrorQueue;
}
