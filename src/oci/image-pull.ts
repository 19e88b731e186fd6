import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { extract as tarExtract, list as tarList } from 'tar';
import { fromDockerConfig } from '../build/image-config.js';
import { Ext4Tools } from '../rootfs/ext4.js';
import type { ImageConfig } from '../store/metadata.js';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';
import type { Logger } from '../util/logger.js';
import { dockerConfigCredentials, parseRef, RegistryClient } from './registry.js';

/**
 * A container image from an OCI registry as an ext4 file, for the vm engine's FROM: the manifest (from
 * an index or a Docker manifest list, linux/amd64), its config, and the layers applied in order into a
 * directory — whiteouts (`.wh.<name>`) delete what lower layers made, an opaque marker (`.wh..wh..opq`)
 * empties its directory first — then `mkfs.ext4 -d`. Every blob is checked against its digest while it
 * downloads; node-tar keeps entries inside the directory (no absolute paths, no `..`, nothing written
 * through a symlink).
 */
const INDEX_TYPES = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json'];
const MANIFEST_TYPES = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'];

interface Descriptor { mediaType: string; digest: string; size: number; platform?: { os?: string; architecture?: string } }

export interface RegistryImage { ref: string; digest: string; config: ImageConfig; layers: Descriptor[]; repository: string; client: RegistryClient }

/** Resolve the reference to its linux/amd64 manifest (no layer downloaded yet). */
export async function resolveRegistryImage(refText: string): Promise<RegistryImage> {
  const ref = parseRef(refText);
  const client = new RegistryClient(ref.registry, await dockerConfigCredentials(ref.registry));
  let m = await client.getManifest(ref.repository, ref.reference, [...INDEX_TYPES, ...MANIFEST_TYPES]);
  let doc = JSON.parse(m.body.toString('utf8')) as { mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; layers?: Descriptor[] };
  if (INDEX_TYPES.includes(doc.mediaType ?? m.mediaType) || doc.manifests) {
    const pick = doc.manifests?.find((d) => d.platform?.os === 'linux' && d.platform?.architecture === 'amd64');
    if (!pick) throw new UserError(`${refText} has no linux/amd64 image`);
    m = await client.getManifest(ref.repository, pick.digest, MANIFEST_TYPES);
    doc = JSON.parse(m.body.toString('utf8'));
  }
  if (!doc.config || !doc.layers) throw new UserError(`${refText} is not a container image (no config or layers)`);
  const cfgFile = await fsp.mkdtemp(path.join((await import('node:os')).tmpdir(), 'firebuild-cfg-'));
  try {
    await client.getBlob(ref.repository, doc.config.digest, doc.config.size, path.join(cfgFile, 'c'));
    const cfg = JSON.parse(await fsp.readFile(path.join(cfgFile, 'c'), 'utf8')) as { config?: Record<string, unknown> };
    return { ref: refText, digest: m.digest, config: fromDockerConfig((cfg.config ?? {}) as never), layers: doc.layers, repository: ref.repository, client };
  } finally {
    await fsp.rm(cfgFile, { recursive: true, force: true });
  }
}

/** Download and apply the layers into `work/rootfs`, then make `image` from it. */
export async function registryImageToExt4(img: RegistryImage, work: string, image: string, log: Logger): Promise<void> {
  const root = path.join(work, 'rootfs');
  await fsp.mkdir(root, { recursive: true, mode: 0o755 });
  const realRoot = await fsp.realpath(root);
  const absoluteLinks = new Map<string, string>();
  for (const [i, layer] of img.layers.entries()) {
    if (!/tar(\+gzip|\.gzip|\+zstd)?$|rootfs\.diff\.tar(\.gzip)?$/.test(layer.mediaType)) throw new UserError(`${img.ref}: layer ${i} has media type ${layer.mediaType}, which the vm engine does not unpack`);
    const file = path.join(work, `layer-${i}`);
    log.info('pulling layer', { ref: img.ref, layer: i, digest: layer.digest, size: layer.size });
    await img.client.getBlob(img.repository, layer.digest, layer.size, file);
    let tarFile = file;
    if (layer.mediaType.endsWith('+zstd')) {
      tarFile = `${file}.tar`;
      await exec('zstd', ['-q', '-d', '-f', '-o', tarFile, file]);
    }
    // Whiteouts first (they delete what lower layers made), then the layer's own entries.
    const whiteouts: string[] = [];
    const invalid: string[] = [];
    const special = new Map<string, number>();
    const devices: { rel: string; kind: 'c' | 'b'; major: number; minor: number; mode: number; uid: number; gid: number }[] = [];
    await tarList({
      file: tarFile,
      // Docker writes some whiteouts as plain files that carry a link name, which node-tar drops as invalid: take those here.
      onwarn: (code: string, message: string, data: unknown) => {
        const p = (data as { header?: { path?: string } } | undefined)?.header?.path;
        if (p && path.posix.basename(p).startsWith('.wh.')) whiteouts.push(p);
        else if (code === 'TAR_ENTRY_INVALID' || code === 'TAR_ENTRY_ERROR') invalid.push(`${p ?? '?'}: ${message}`);
      },
      onReadEntry: (e) => {
        if (path.posix.basename(e.path).startsWith('.wh.')) whiteouts.push(e.path);
        // node-tar strips the leading / of symlink targets; the image's absolute links are put back at the end.
        const rel = path.posix.normalize(e.path.replace(/^\/+/, '')).replace(/\/+$/, '');
        if (e.type === 'SymbolicLink' && e.linkpath?.startsWith('/')) absoluteLinks.set(rel, e.linkpath);
        else absoluteLinks.delete(rel);
        // setuid, setgid and sticky bits: chown clears them, so they are set again after the layer is unpacked.
        if (e.type !== 'SymbolicLink' && (e.mode ?? 0) & 0o7000) special.set(rel, (e.mode ?? 0) & 0o7777);
        // node-tar makes no device nodes: made here with mknod after the layer.
        if (e.type === 'CharacterDevice' || e.type === 'BlockDevice') devices.push({ rel, kind: e.type === 'CharacterDevice' ? 'c' : 'b', major: e.header.devmaj ?? 0, minor: e.header.devmin ?? 0, mode: (e.mode ?? 0) & 0o7777, uid: e.uid ?? 0, gid: e.gid ?? 0 });
      },
    });
    if (invalid.length) throw new UserError(`${img.ref}: layer ${i} has entries firebuild will not unpack (${invalid.slice(0, 3).join('; ')}): refusing it`);
    for (const w of whiteouts) {
      const rel = path.posix.normalize(w.replace(/^\/+/, ''));
      if (rel.startsWith('..')) throw new UserError(`${img.ref}: layer ${i} has a whiteout outside the root (${w}): refusing it`);
      const dir = path.join(root, path.posix.dirname(rel));
      // Never through a symlink out of the root (the host's files are not the image's).
      const realDir = await fsp.realpath(dir).catch(() => undefined);
      if (!realDir) continue;
      if (realDir !== realRoot && !realDir.startsWith(realRoot + path.sep)) throw new UserError(`${img.ref}: layer ${i} whites out ${w} through a link out of the root: refusing it`);
      const base = path.posix.basename(rel);
      if (base !== '.wh..wh..opq') absoluteLinks.delete(path.posix.join(path.posix.dirname(rel), base.slice(4)));
      if (base === '.wh..wh..opq') {
        for (const child of await fsp.readdir(dir).catch(() => [] as string[])) await fsp.rm(path.join(dir, child), { recursive: true, force: true });
      } else {
        await fsp.rm(path.join(dir, base.slice(4)), { recursive: true, force: true });
      }
    }
    // Modes exactly as the layer says: no umask while unpacking.
    const umask = process.umask(0);
    try {
      await tarExtract({ file: tarFile, cwd: root, preservePaths: false, preserveOwner: true, chmod: true, processUmask: 0, umask: 0, filter: (p) => !path.posix.basename(p).startsWith('.wh.') });
    } finally {
      process.umask(umask);
    }
    if (devices.length) {
      // node-tar reads no device numbers from GNU-format headers: GNU tar lists them.
      const numbers = new Map<string, [number, number]>();
      for (const line of (await exec('tar', ['--numeric-owner', '-tvf', tarFile])).stdout.split('\n')) {
        const m = /^[cb]\S+\s+\d+\/\d+\s+(\d+),\s*(\d+)\s+\S+\s+\S+\s+(.+)$/.exec(line);
        if (m) numbers.set(path.posix.normalize(m[3]!.replace(/^\/+/, '')).replace(/\/+$/, ''), [Number(m[1]), Number(m[2])]);
      }
      for (const d of devices) {
        const n = numbers.get(d.rel);
        if (n) [d.major, d.minor] = n;
      }
    }
    for (const d of devices) {
      const p = path.join(root, d.rel);
      const parent = await fsp.realpath(path.dirname(p)).catch(() => undefined);
      if (!parent || (parent !== realRoot && !parent.startsWith(realRoot + path.sep))) continue;
      await fsp.rm(p, { force: true });
      await exec('mknod', ['-m', d.mode.toString(8), p, d.kind, String(d.major), String(d.minor)]);
      await fsp.lchown(p, d.uid, d.gid);
    }
    for (const [rel, mode] of special) {
      const p = path.join(root, rel);
      const real = await fsp.realpath(p).catch(() => undefined);
      if (real && real.startsWith(realRoot + path.sep) && !(await fsp.lstat(p)).isSymbolicLink()) await fsp.chmod(p, mode);
    }
    await fsp.rm(file, { force: true });
    if (tarFile !== file) await fsp.rm(tarFile, { force: true });
  }
  for (const [rel, target] of absoluteLinks) {
    const p = path.join(root, rel);
    const st = await fsp.lstat(p).catch(() => undefined);
    if (!st?.isSymbolicLink()) continue;
    await fsp.unlink(p);
    await fsp.symlink(target, p);
  }
  const used = Number((await exec('du', ['-sb', root])).stdout.split(/\s+/)[0] ?? 0);
  await new Ext4Tools(log).mkfs({ root, image, sizeBytes: Math.ceil((used * 1.3 + 64 * 1024 ** 2) / 4096) * 4096 });
  await fsp.rm(root, { recursive: true, force: true });
}
