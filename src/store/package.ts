import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { exec } from '../util/exec.js';
import { sha256File } from '../util/fs.js';
import type { StorageProvider } from './provider.js';

/**
 * A stored image as release files: `rootfs.ext4.zst` (zstd), `metadata.json` and `SHA256SUMS` (the
 * `sha256sum -c` format, over the two files and the uncompressed rootfs.ext4), in `outDir`.
 */
export interface PackagedImage {
  dir: string;
  files: string[];
  sums: Record<string, string>;
}

export async function packageImage(storage: StorageProvider, tag: string, outDir: string): Promise<PackagedImage> {
  const image = await storage.getImage(tag);
  await fsp.mkdir(outDir, { recursive: true });
  const zst = path.join(outDir, 'rootfs.ext4.zst');
  await exec('zstd', ['-q', '-T0', '-3', '-f', '-o', zst, image.rootfsPath]);
  const meta = path.join(outDir, 'metadata.json');
  const metaBytes = Buffer.from(JSON.stringify(image.metadata, null, 2) + '\n');
  await fsp.writeFile(meta, metaBytes);
  const sums: Record<string, string> = {
    'rootfs.ext4.zst': await sha256File(zst),
    'metadata.json': createHash('sha256').update(metaBytes).digest('hex'),
    'rootfs.ext4': image.metadata.rootfs.sha256,
  };
  const sumsFile = path.join(outDir, 'SHA256SUMS');
  await fsp.writeFile(sumsFile, Object.entries(sums).map(([n, d]) => `${d}  ${n}\n`).join(''));
  return { dir: outDir, files: [zst, meta, sumsFile], sums };
}
