// Test certificates with node-forge: a CA and a serving certificate for the
// names and IP addresses given (what the apiserver checks when it calls a
// webhook by URL).
import forge from 'node-forge';

export interface Pem {
  cert: string;
  key: string;
}

function serial(): string {
  return '01' + forge.util.bytesToHex(forge.random.getBytesSync(15));
}

function validity(c: forge.pki.Certificate): void {
  c.validity.notBefore = new Date(Date.now() - 60_000);
  c.validity.notAfter = new Date(Date.now() + 24 * 3600_000);
}

export function makeCA(cn = 'rdbg test CA'): Pem {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const c = forge.pki.createCertificate();
  c.publicKey = keys.publicKey;
  c.serialNumber = serial();
  validity(c);
  const subject = [{ name: 'commonName', value: cn }];
  c.setSubject(subject);
  c.setIssuer(subject);
  c.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
  ]);
  c.sign(keys.privateKey, forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(c), key: forge.pki.privateKeyToPem(keys.privateKey) };
}

export function makeServing(ca: Pem, opts: { ips?: string[]; dns?: string[]; cn?: string }): Pem & { serial: string } {
  const keys = forge.pki.rsa.generateKeyPair(2048);
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const c = forge.pki.createCertificate();
  c.publicKey = keys.publicKey;
  c.serialNumber = serial();
  validity(c);
  c.setSubject([{ name: 'commonName', value: opts.cn ?? opts.dns?.[0] ?? opts.ips?.[0] ?? 'webhook' }]);
  c.setIssuer(caCert.subject.attributes);
  c.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [...(opts.dns ?? []).map((value) => ({ type: 2, value })), ...(opts.ips ?? []).map((ip) => ({ type: 7, ip }))] },
  ]);
  c.sign(forge.pki.privateKeyFromPem(ca.key), forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(c), key: forge.pki.privateKeyToPem(keys.privateKey), serial: c.serialNumber };
}
