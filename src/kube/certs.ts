// The webhook's TLS: a private CA and a serving certificate for the manager's
// Service, made by the CLI so that no cert-manager is needed. node-forge builds
// and signs the X.509; the RSA keys come from node:crypto (OpenSSL), which is
// two orders of magnitude faster than forge's pure-JS prime search.
import { createPrivateKey, generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import forge from 'node-forge';

export interface WebhookTls {
  /** PEM texts, as stored in the Secret's ca.crt, tls.crt and tls.key */
  caCrt: string;
  tlsCrt: string;
  tlsKey: string;
}

const DAY_MS = 24 * 3600_000;
const VALID_DAYS = 365;

/** The DNS names the apiserver may use for the webhook Service. */
export function serviceDnsNames(namespace: string, service = 'rdbg-manager'): string[] {
  return [`${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}

function rsaKeyPair(): { privateKey: forge.pki.rsa.PrivateKey; publicKey: forge.pki.rsa.PublicKey; pem: string } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const key = forge.pki.privateKeyFromPem(pem) as forge.pki.rsa.PrivateKey;
  return { privateKey: key, publicKey: forge.pki.setRsaPublicKey(key.n, key.e), pem };
}

function newCert(publicKey: forge.pki.PublicKey, now: Date): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  // a positive 128-bit serial (the leading 0 nibble keeps the DER integer positive)
  cert.serialNumber = '0' + randomBytes(16).toString('hex').slice(1);
  // a few minutes back: the apiserver's clock may lag the laptop's
  cert.validity.notBefore = new Date(now.getTime() - 5 * 60_000);
  cert.validity.notAfter = new Date(now.getTime() + VALID_DAYS * DAY_MS);
  return cert;
}

/** A fresh CA and a serving certificate for rdbg-manager.<namespace>.svc, valid one year. */
export function generateWebhookTls(namespace: string, now = new Date()): WebhookTls {
  const ca = rsaKeyPair();
  const caCert = newCert(ca.publicKey, now);
  const caName = [{ name: 'commonName', value: `rdbg-webhook-ca.${namespace}` }, { name: 'organizationName', value: 'rdbg' }];
  caCert.setSubject(caName);
  caCert.setIssuer(caName);
  caCert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  caCert.sign(ca.privateKey, forge.md.sha256.create());

  const leaf = rsaKeyPair();
  const names = serviceDnsNames(namespace);
  const cert = newCert(leaf.publicKey, now);
  cert.setSubject([{ name: 'commonName', value: names[0] }]);
  cert.setIssuer(caName);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: names.map((value) => ({ type: 2, value })) },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(ca.privateKey, forge.md.sha256.create());

  return { caCrt: forge.pki.certificateToPem(caCert), tlsCrt: forge.pki.certificateToPem(cert), tlsKey: leaf.pem };
}

/**
 * Whether stored TLS material can be kept by a repeated install: it parses,
 * the serving cert is signed by the CA, names this namespace's Service and
 * has more than 30 days left.
 */
export function reusableTls(tls: Partial<WebhookTls>, namespace: string, now = new Date()): tls is WebhookTls {
  if (!tls.caCrt || !tls.tlsCrt || !tls.tlsKey) return false;
  try {
    const ca = new X509Certificate(tls.caCrt);
    const cert = new X509Certificate(tls.tlsCrt);
    if (!cert.verify(ca.publicKey) || !cert.checkPrivateKey(createPrivateKey(tls.tlsKey))) return false;
    if (new Date(cert.validTo).getTime() - now.getTime() < 30 * DAY_MS) return false;
    const sans = cert.subjectAltName ?? '';
    return serviceDnsNames(namespace).every((n) => sans.includes(`DNS:${n}`));
  } catch {
    return false;
  }
}
