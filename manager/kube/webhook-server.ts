// The agent-injection webhook (docs/kubernetes.md, "Injection"): HTTPS for
// the apiserver, POST /inject (AdmissionReview v1), GET /healthz. Every
// answer allows the pod: one that cannot or should not be patched passes
// unchanged, with a warning the user sees in kubectl and in the log.
import { readFileSync } from 'node:fs';
import * as https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Codes, errorMessage, listenFailure, RdbgError } from '../../src/core/errors';
import { logger } from '../../src/core/log';
import { injectPod, type InjectSettings } from './inject';
import type { Pod } from './pod';

const log = logger('manager.webhook');

export const DEFAULT_TLS_DIR = '/var/run/rdbg/tls';
const MAX_BODY = 16 * 1024 * 1024;

export interface WebhookServerOptions {
  settings: InjectSettings;
  /** Holds tls.crt and tls.key (the mounted Secret rdbg-webhook-tls). */
  tlsDir?: string;
  host?: string;
  port?: number; // default 8443; 0 picks one
  /** How often the certificate files are checked for a new version (ms). */
  reloadMs?: number;
}

interface AdmissionRequest {
  uid: string;
  kind?: { group?: string; version?: string; kind?: string };
  operation?: string;
  namespace?: string;
  object?: Pod;
}

class BadRequest extends Error {}

/** The AdmissionReview's request, or BadRequest saying what is wrong with it. */
function parseReview(body: string): AdmissionRequest {
  let review: { apiVersion?: unknown; kind?: unknown; request?: AdmissionRequest };
  try {
    review = JSON.parse(body) as typeof review;
  } catch (err) {
    throw new BadRequest(`body is not JSON: ${errorMessage(err)}`);
  }
  if (!review || typeof review !== 'object') throw new BadRequest('body is not an AdmissionReview object');
  if (review.kind !== 'AdmissionReview' || review.apiVersion !== 'admission.k8s.io/v1') {
    throw new BadRequest(`expected an admission.k8s.io/v1 AdmissionReview, got ${String(review.apiVersion)} ${String(review.kind)}`);
  }
  const req = review.request;
  if (!req || typeof req !== 'object' || typeof req.uid !== 'string' || !req.uid) throw new BadRequest('AdmissionReview without request.uid');
  if (req.object !== undefined && (typeof req.object !== 'object' || req.object === null)) throw new BadRequest('request.object is not an object');
  return req;
}

export class WebhookServer {
  readonly stats = { injected: 0, skipped: 0, warned: 0, failed: 0, badRequests: 0, reloads: 0 };
  private server?: https.Server;
  private timer?: NodeJS.Timeout;
  private cert = '';
  private key = '';
  private readonly tlsDir: string;

  constructor(private readonly opts: WebhookServerOptions) {
    this.tlsDir = opts.tlsDir ?? DEFAULT_TLS_DIR;
  }

  /** Listens; resolves with the port. */
  async start(): Promise<number> {
    const { cert, key } = this.readTls();
    this.cert = cert;
    this.key = key;
    const server = https.createServer({ cert, key }, (req, res) => this.handle(req, res));
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    server.on('tlsClientError', (err) => log.debug('TLS handshake failed', { err: err.message }));
    this.server = server;
    const port = await new Promise<number>((resolve, reject) => {
      const failed = (err: Error): void => reject(listenFailure('--webhook-listen', `${this.opts.host ?? '0.0.0.0'}:${this.opts.port ?? 8443}`, err));
      server.once('error', failed);
      server.listen(this.opts.port ?? 8443, this.opts.host, () => {
        server.removeListener('error', failed);
        resolve((server.address() as AddressInfo).port);
      });
    });
    this.timer = setInterval(() => this.reload(), this.opts.reloadMs ?? 10_000);
    this.timer.unref();
    log.info('agent-injection webhook listening', { port, tlsDir: this.tlsDir, image: this.opts.settings.image });
    return port;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private readTls(): { cert: string; key: string } {
    try {
      return { cert: readFileSync(join(this.tlsDir, 'tls.crt'), 'utf8'), key: readFileSync(join(this.tlsDir, 'tls.key'), 'utf8') };
    } catch (err) {
      throw new RdbgError(
        Codes.BAD_ARGUMENT,
        `webhook: cannot read the TLS certificate in ${this.tlsDir}: ${errorMessage(err)}`,
        'mount the Secret rdbg-webhook-tls there (rdbg manager install creates it; rdbg manager upgrade renews it)',
        { cause: err },
      );
    }
  }

  /**
   * A Secret volume changes on `rdbg manager upgrade` (the kubelet swaps the
   * files atomically); the new pair serves the next handshakes. A pair that
   * does not load (a half-written update) keeps the old one until next time.
   */
  reload(): void {
    if (!this.server) return;
    let next: { cert: string; key: string };
    try {
      next = this.readTls();
    } catch (err) {
      log.warn('cannot read the TLS files; keeping the current certificate', { err: errorMessage(err) });
      return;
    }
    if (next.cert === this.cert && next.key === this.key) return;
    try {
      this.server.setSecureContext(next);
    } catch (err) {
      log.warn('the new TLS files do not load; keeping the current certificate', { err: errorMessage(err) });
      return;
    }
    this.cert = next.cert;
    this.key = next.key;
    this.stats.reloads++;
    log.info('webhook certificate reloaded', { tlsDir: this.tlsDir });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path !== '/inject') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'POST' }).end('POST an AdmissionReview\n');
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        this.stats.badRequests++;
        res.writeHead(413, { 'content-type': 'text/plain', connection: 'close' }).end('AdmissionReview too large\n');
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      let request: AdmissionRequest;
      try {
        request = parseReview(Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        this.stats.badRequests++;
        log.warn('malformed admission request', { err: errorMessage(err) });
        res.writeHead(400, { 'content-type': 'text/plain' }).end(`${errorMessage(err)}\n`);
        return;
      }
      const review = { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response: this.review(request) };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(review));
    });
    req.on('error', (err) => log.debug('webhook request error', { err: err.message }));
  }

  /** The AdmissionResponse: always allowed; a patch when the pod gets an agent. */
  review(req: AdmissionRequest): Record<string, unknown> {
    const allow = { uid: req.uid, allowed: true };
    const pod = req.object;
    if (req.kind?.kind !== 'Pod' || req.operation !== 'CREATE' || !pod) return allow;
    const namespace = req.namespace || pod.metadata?.namespace || 'default';
    const name = pod.metadata?.name || `${pod.metadata?.generateName ?? ''}*`;
    try {
      const d = injectPod(pod, namespace, this.opts.settings);
      if (!d.inject) {
        if (d.warn) {
          this.stats.warned++;
          log.warn('no agent injected', { namespace, pod: name, reason: d.reason });
          return { ...allow, warnings: [`rdbg: no agent injected into pod ${name}: ${d.reason}`] };
        }
        this.stats.skipped++;
        log.debug('pod left alone', { namespace, pod: name, reason: d.reason });
        return allow;
      }
      this.stats.injected++;
      log.info('agent injected', { namespace, pod: name, container: d.container, mode: d.mode, appPort: d.appPort, agentPort: d.agentPort });
      return { ...allow, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(d.patch)).toString('base64') };
    } catch (err) {
      // A pod the injector does not understand must still be created.
      this.stats.failed++;
      log.error('injection failed; the pod is created without an agent', { namespace, pod: name, err: errorMessage(err), stack: (err as Error).stack });
      return { ...allow, warnings: [`rdbg: no agent injected into pod ${name}: ${errorMessage(err)}`] };
    }
  }
}
