// The agent's end of a mount: for each intercept whose files this pod serves
// (InterceptInfo.files_pod), one files flow to the owner's laptop, opened by
// the agent as a diverted flow is and answered there by the laptop's mount.
// The flow carries SFTP (src/tunnel/sftp.ts) served from the app's volumes.
import { errorMessage } from '../src/core/errors';
import { logger } from '../src/core/log';
import { sftpOn } from '../src/tunnel/sftp';
import type { ManagerLink } from './manager-link';
import { serveFiles } from './sftp-fs';

const log = logger('agent.files');

/** A flow that ended, or could not be opened, is opened again after this long (doubling up to 30 s). */
const RETRY_MS = 1000;
const MAX_RETRY_MS = 30_000;

interface Wanted {
  open: boolean;
  retryMs: number;
  timer?: NodeJS.Timeout;
  close?: () => void;
}

export class FilesFlows {
  private readonly wanted = new Map<string, Wanted>();

  constructor(private readonly link: ManagerLink, private readonly root: string) {}

  /** The intercepts this pod serves files for now. */
  update(ids: readonly string[]): void {
    for (const [id, w] of this.wanted) {
      if (ids.includes(id)) continue;
      this.wanted.delete(id);
      clearTimeout(w.timer);
      w.close?.();
    }
    for (const id of ids) {
      if (this.wanted.has(id)) continue;
      const w: Wanted = { open: false, retryMs: RETRY_MS };
      this.wanted.set(id, w);
      this.open(id, w);
    }
  }

  closeAll(): void {
    this.update([]);
  }

  private open(id: string, w: Wanted): void {
    const again = (why: string): void => {
      if (this.wanted.get(id) !== w) return;
      log.debug('files flow: opening again', { intercept: id, why, inMs: w.retryMs });
      w.timer = setTimeout(() => this.open(id, w), w.retryMs);
      w.retryMs = Math.min(w.retryMs * 2, MAX_RETRY_MS);
    };
    const data = this.link.dataPlane;
    if (!data) return again('no data plane yet');
    data.divert(id, 'files').then(
      (stream) => {
        if (this.wanted.get(id) !== w) return void stream.close();
        w.open = true;
        w.retryMs = RETRY_MS;
        w.close = () => stream.close();
        log.info('serving the app\'s files', { intercept: id, root: this.root });
        serveFiles(sftpOn(stream, 'server'), this.root);
        stream.once('close', () => {
          w.open = false;
          w.close = undefined;
          again('the flow ended');
        });
      },
      (err: unknown) => again(errorMessage(err)),
    );
  }
}
