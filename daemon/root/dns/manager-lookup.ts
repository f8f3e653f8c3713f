import type { ManagerClient } from '../../../src/rpc/services';
import type { LookupCluster } from './query-handler';

/**
 * lookupCluster backed by the manager's LookupDNS RPC for one session. An RPC
 * failure rejects, which the server answers with SERVFAIL.
 */
export function managerLookup(client: ManagerClient, sessionId: () => string, timeoutMs = 4000): LookupCluster {
  return (name, qtype) =>
    new Promise((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      client.LookupDNS({ session_id: sessionId(), name, qtype }, { deadline }, (err, res) => {
        if (err || !res) return reject(err ?? new Error('empty LookupDNS answer'));
        resolve({ rcode: res.rcode, name: res.name, answers: res.answers });
      });
    });
}
