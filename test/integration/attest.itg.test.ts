import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash, verify as cryptoVerify } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { INDEX_MEDIA_TYPE, listReferrers, MANIFEST_MEDIA_TYPE, referrersTag } from '../../src/oci/referrers.js';
import { RegistryClient } from '../../src/oci/registry.js';
import { tempDir } from '../helpers/cli.js';
import { mkfsFromDir, storeRawImage } from '../helpers/ext4-craft.js';
import { annotations, runAction } from '../helpers/runner.js';
import { startSigstoreStandin, type SigstoreStandin } from '../helpers/sigstore-standin.js';

/**
 * Build provenance from the bundled publish action through @actions/attest, unchanged: the runner's
 * OIDC token, GitHub's Sigstore instance (Fulcio and the timestamp authority) and the attestations API
 * are local stand-ins (test/helpers/sigstore-standin.ts) — those services cannot be reached from here.
 * What is checked is the real contract: the stored bundle's DSSE envelope carries an in-toto SLSA v1
 * statement naming the published digests, its signature verifies with the certificate Fulcio issued for
 * the runner's identity, and the RFC 3161 timestamp covers that signature.
 */
let work: string;
let sig: SigstoreStandin;
let env: NodeJS.ProcessEnv;
const TAG = 'fbtest/attest:1';

beforeAll(async () => {
  work = await tempDir('firebuild-attest-');
  sig = await startSigstoreStandin(path.join(work, 'sigstore'));
  env = { FIREBUILD_HOME: path.join(work, 'home') };
  // A small ext4 image with a dpkg database in the store, written through the real store code.
  const tree = path.join(work, 'tree');
  fs.mkdirSync(path.join(tree, 'var/lib/dpkg'), { recursive: true });
  fs.writeFileSync(path.join(tree, 'var/lib/dpkg/status'), 'Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n');
  mkfsFromDir(tree, path.join(work, 'attest.ext4'), { sizeMiB: 4 });
  await storeRawImage(path.join(work, 'home'), TAG, path.join(work, 'attest.ext4'));
});

afterAll(() => {
  sig.close();
  fs.rmSync(work, { recursive: true, force: true });
});

/** DSSE's pre-authentication encoding, which the signature covers. */
function pae(type: string, payload: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`DSSEv1 ${Buffer.byteLength(type)} ${type} ${payload.length} `), payload]);
}

describe('publish: build provenance via @actions/attest', () => {
  test('with id-token and a token: a signed SLSA v1 attestation of the published digests is stored in the repository', async () => {
    const ref = `127.0.0.1:5000/fbtest/attest-${process.pid}:1`;
    const r = await runAction('publish/index.js', { tag: TAG, 'oci-ref': ref, 'github-token': 'ghs_test' }, { ...env, ...sig.env }, undefined, sig.wrap);
    expect({ code: r.code, errors: annotations(r.stdout) }).toEqual({ code: 0, errors: [] });
    expect(r.outputs['attestation-id']).toBe('4242');
    expect(r.summary).toContain('https://github.com/acme/app/attestations/4242');
    // The token is masked (the runner hides masked values) and never printed otherwise.
    expect(r.stdout).toContain('::add-mask::ghs_test');
    expect(r.stdout.split('\n').filter((l) => l.includes('ghs_test') && !l.startsWith('::add-mask::'))).toEqual([]);
    expect(sig.attestations).toHaveLength(1);
    const stored = sig.attestations[0]!;
    expect(stored).toMatchObject({ owner: 'acme', repo: 'app', auth: 'token ghs_test' });
    expect(JSON.parse(fs.readFileSync(r.outputs['attestation-bundle']!, 'utf8'))).toEqual(stored.bundle);

    const bundle = stored.bundle as {
      mediaType: string;
      dsseEnvelope: { payload: string; payloadType: string; signatures: { sig: string }[] };
      verificationMaterial: { certificate?: { rawBytes: string }; timestampVerificationData: { rfc3161Timestamps: { signedTimestamp: string }[] } };
    };
    expect(bundle.mediaType).toBe('application/vnd.dev.sigstore.bundle.v0.3+json');
    const payload = Buffer.from(bundle.dsseEnvelope.payload, 'base64');
    const statement = JSON.parse(payload.toString()) as { _type: string; subject: { name: string; digest: { sha256: string } }[]; predicateType: string; predicate: { runDetails: { builder: { id: string } } } };
    expect(statement._type).toBe('https://in-toto.io/Statement/v1');
    expect(statement.predicateType).toBe('https://slsa.dev/provenance/v1');
    expect(statement.predicate.runDetails.builder.id).toBe(`https://github.com/${String(sig.claims.job_workflow_ref)}`);
    expect(statement.subject).toEqual(expect.arrayContaining([
      { name: ref.replace(/:1$/, ''), digest: { sha256: r.outputs.digest!.replace('sha256:', '') } },
      { name: 'rootfs.ext4', digest: { sha256: r.outputs.sha256! } },
    ]));

    // The signature verifies with the certificate Fulcio issued, and that certificate chains to its CA.
    const cert = new X509Certificate(Buffer.from(bundle.verificationMaterial.certificate!.rawBytes, 'base64'));
    const ca = new X509Certificate(fs.readFileSync(sig.caPem));
    expect(cert.verify(ca.publicKey)).toBe(true);
    expect(cert.subjectAltName).toContain(String(sig.claims.job_workflow_ref));
    const signature = Buffer.from(bundle.dsseEnvelope.signatures[0]!.sig, 'base64');
    expect(cryptoVerify('sha256', pae(bundle.dsseEnvelope.payloadType, payload), cert.publicKey, signature)).toBe(true);
    expect(cryptoVerify('sha256', pae(bundle.dsseEnvelope.payloadType, Buffer.from(payload.toString().replace('rootfs.ext4', 'rootfs.ext5'))), cert.publicKey, signature)).toBe(false);

    // The bundle is in the registry too, a referrer of the pushed manifest (registry:2 has no referrers
    // API: found through the referrers tag sha256-<hex>), beside the SBOM.
    const reg = new RegistryClient('127.0.0.1:5000');
    const repo = ref.replace(/^127\.0\.0\.1:5000\//, '').replace(/:1$/, '');
    const refs = await listReferrers(reg, repo, r.outputs.digest!);
    expect(refs.via).toBe('tag');
    expect(refs.manifests.map((m) => m.artifactType).sort()).toEqual(['application/spdx+json', 'application/vnd.dev.sigstore.bundle.v0.3+json']);
    const att = refs.manifests.find((m) => m.artifactType === 'application/vnd.dev.sigstore.bundle.v0.3+json')!;
    expect(att.digest).toBe(r.outputs['attestation-referrer']);
    expect(att.annotations).toMatchObject({ 'dev.sigstore.bundle.content': 'dsse-envelope', 'dev.sigstore.bundle.predicateType': 'https://slsa.dev/provenance/v1' });
    const m = JSON.parse((await reg.getManifest(repo, att.digest, [MANIFEST_MEDIA_TYPE])).body.toString()) as { artifactType: string; subject: { digest: string }; layers: { mediaType: string; digest: string; size: number }[] };
    expect(m).toMatchObject({ artifactType: 'application/vnd.dev.sigstore.bundle.v0.3+json', subject: { digest: r.outputs.digest }, layers: [{ mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json' }] });
    await reg.getBlob(repo, m.layers[0]!.digest, m.layers[0]!.size, path.join(work, 'bundle.json'));
    expect(JSON.parse(fs.readFileSync(path.join(work, 'bundle.json'), 'utf8'))).toEqual(stored.bundle);
    expect((await reg.getManifest(repo, referrersTag(r.outputs.digest!), [INDEX_MEDIA_TYPE])).mediaType).toBe(INDEX_MEDIA_TYPE);
    // The SBOM is a subject of the statement too.
    expect(statement.subject.map((x) => x.name)).toContain('sbom.spdx.json');

    // The timestamp authority's reply covers the signature (openssl ts -verify).
    const tsr = path.join(work, 'ts.tsr');
    fs.writeFileSync(tsr, Buffer.from(bundle.verificationMaterial.timestampVerificationData.rfc3161Timestamps[0]!.signedTimestamp, 'base64'));
    const digest = createHash('sha256').update(signature).digest('hex');
    expect(() => execFileSync('openssl', ['ts', '-verify', '-digest', digest, '-in', tsr, '-CAfile', sig.caPem, '-untrusted', path.join(work, 'sigstore', 'tsa.pem')], { stdio: 'pipe' })).not.toThrow();
  });

  test('without the id-token permission: auto skips (and says how to enable it); attest: true is one annotation', async () => {
    const before = sig.attestations.length;
    const ref = `127.0.0.1:5000/fbtest/attest-${process.pid}:2`;
    const noIdToken = { ...env, ...sig.env, ACTIONS_ID_TOKEN_REQUEST_URL: '', ACTIONS_ID_TOKEN_REQUEST_TOKEN: '' };
    const auto = await runAction('publish/index.js', { tag: TAG, 'oci-ref': ref, 'github-token': 'ghs_test' }, noIdToken, undefined, sig.wrap);
    expect({ code: auto.code, errors: annotations(auto.stdout) }).toEqual({ code: 0, errors: [] });
    expect(auto.outputs['attestation-id']).toBeUndefined();
    expect(auto.summary).toContain('not attested: grant id-token: write and attestations: write');

    const forced = await runAction('publish/index.js', { tag: TAG, 'oci-ref': ref, 'github-token': 'ghs_test', attest: 'true' }, noIdToken, undefined, sig.wrap);
    expect(forced.code).toBe(1);
    expect(annotations(forced.stdout)).toEqual([expect.stringMatching(/attest is 'true' but the job has no OIDC token: grant 'permissions: id-token: write' and 'attestations: write'/)]);
    expect(sig.attestations.length).toBe(before);
  });

  test('without attestations: write the API refuses: one annotation naming the permission', async () => {
    sig.attestationStatus = 403;
    try {
      const ref = `127.0.0.1:5000/fbtest/attest-${process.pid}:3`;
      const r = await runAction('publish/index.js', { tag: TAG, 'oci-ref': ref, 'github-token': 'ghs_test' }, { ...env, ...sig.env }, undefined, sig.wrap);
      expect(r.code).toBe(1);
      const errs = annotations(r.stdout);
      expect(errs).toHaveLength(1);
      expect(errs[0]).toMatch(/build provenance failed: .*grant the job 'permissions: attestations: write'/);
    } finally {
      sig.attestationStatus = 201;
    }
  });
});
