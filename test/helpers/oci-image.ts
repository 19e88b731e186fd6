import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { parseRef, RegistryClient } from '../../src/oci/registry.js';

/**
 * An OCI image made of crafted layers (raw tar bytes, e.g. from `rawTar`: any name, any link, what no
 * honest tool writes) pushed to a registry: for hostile-registry tests. Each layer is gzipped; the
 * config lists their diff ids. Returns the manifest's digest.
 */
export async function pushCraftedImage(ref: string, layers: Buffer[], config: Record<string, unknown> = {}): Promise<string> {
  const r = parseRef(ref);
  const client = new RegistryClient(r.registry);
  const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const descs = [];
  for (const tar of layers) {
    const gz = gzipSync(tar);
    await client.pushBlob(r.repository, { data: gz }, sha(gz), gz.length);
    descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha(gz), size: gz.length });
  }
  const cfg = Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], ...config },
    rootfs: { type: 'layers', diff_ids: layers.map(sha) },
  }));
  await client.pushBlob(r.repository, { data: cfg }, sha(cfg), cfg.length);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(cfg), size: cfg.length },
    layers: descs,
  }));
  return client.putManifest(r.repository, r.reference, manifest, 'application/vnd.oci.image.manifest.v1+json');
}
