import { randomBytes } from 'node:crypto';
import type * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import type { Plan } from '../dockerfile/plan-schema.js';
import { padding, tarEnd, tarHeader } from '../rootfs/tar-write.js';
import { UserError } from '../util/errors.js';
import type { ResolvedSource } from '../source/resolve.js';
import { plannedDownload, type Downloads } from '../source/downloads.js';
import { exists, mtimeOf } from '../util/fs.js';

/**
 * The build context sent to the Docker engine, as the docker CLI makes it: every path .dockerignore
 * keeps (exceptions re-include paths inside excluded directories), the Dockerfile and .dockerignore
 * always, owners zeroed, modes kept exactly (setuid, setgid, sticky, 0775, 0444 ...: what the engine's
 * COPY keeps), mtimes to the second, hard links as links. A Dockerfile outside the context (literal text, http, --context elsewhere) goes
 * in as `.dockerfile.<random>`, listed in the sent .dockerignore so COPY never sees it. An http context is
 * materialised from the plan's resources first.
 */
export interface ContextTar {
  stream: Readable;
  /** The Dockerfile's path inside the tar. */
  dockerfile: string;
}

export async function contextTar(src: ResolvedSource, plan: Plan, scratch: string, downloads?: Downloads): Promise<ContextTar> {
  const ctx = src.context;
  if (ctx.kind === 'local' && src.dockerfilePath) {
    const root = path.resolve(ctx.root);
    const dfRel = path.relative(root, src.dockerfilePath);
    if (!dfRel.startsWith('..') && !path.isAbsolute(dfRel)) {
      const files = await keptPaths(root, (rel) => ctx.ignored(rel));
      for (const extra of [dfRel, '.dockerignore']) if (!files.includes(extra) && (await exists(path.join(root, extra)))) files.push(extra);
      return { stream: pack(root, files), dockerfile: dfRel };
    }
  }
  // Materialise: copy what the context keeps (or fetch it), then add the Dockerfile under a hidden name.
  const dir = path.join(scratch, 'context');
  await fsp.mkdir(dir, { recursive: true });
  let ignoreLines: string[] = [];
  if (ctx.kind === 'local') {
    const root = path.resolve(ctx.root);
    const dirs: [string, fs.Stats][] = [];
    const copied = new Map<string, string>();
    for (const rel of await keptPaths(root, (r) => ctx.ignored(r))) {
      const from = path.join(root, rel);
      const to = path.join(dir, rel);
      const st = await fsp.lstat(from);
      if (st.isDirectory()) {
        await fsp.mkdir(to, { recursive: true });
        dirs.push([to, st]);
        continue;
      }
      await fsp.mkdir(path.dirname(to), { recursive: true });
      // A second name of a file stays a hard link (the tar sends it as one).
      const inode = `${st.dev}:${st.ino}`;
      const first = st.isFile() && st.nlink > 1 ? copied.get(inode) : undefined;
      if (first !== undefined) await fsp.link(first, to);
      else {
        await fsp.cp(from, to, { verbatimSymlinks: true, preserveTimestamps: true });
        if (st.isFile() && st.nlink > 1) copied.set(inode, to);
      }
    }
    // The directories' own modes (mkdir applies the umask) and mtimes, once nothing more is written into them.
    for (const [to, st] of dirs.reverse()) {
      await fsp.chmod(to, st.mode & 0o7777);
      await fsp.utimes(to, st.atime, st.mtime);
    }
    if (ctx.ignoreFile) ignoreLines = (await fsp.readFile(ctx.ignoreFile, 'utf8')).split('\n');
  } else if (ctx.kind === 'http') {
    for (const st of plan.stages) {
      for (const step of st.steps) {
        for (const r of step.resources ?? []) {
          if (r.kind !== 'file' || !r.url || !r.path) continue;
          const to = path.join(dir, r.path);
          await fsp.mkdir(path.dirname(to), { recursive: true });
          // The file the plan hashed (this build's download), or one that must match the plan's digest.
          const have = downloads?.file(r.sha256);
          if (have) await fsp.cp(have, to, { preserveTimestamps: true });
          else await plannedDownload(r.url, r.sha256, to, downloads, step.keyword);
          await fsp.chmod(to, 0o644);
        }
      }
    }
  }
  const dfName = `.dockerfile.${randomBytes(10).toString('hex')}`;
  await fsp.writeFile(path.join(dir, dfName), src.text);
  await fsp.writeFile(path.join(dir, '.dockerignore'), [...ignoreLines, dfName, '.dockerignore', ''].join('\n'));
  return { stream: pack(dir, await keptPaths(dir, () => false)), dockerfile: dfName };
}

function pack(cwd: string, files: string[]): Readable {
  return Readable.from(packEntries(cwd, files), { objectMode: false });
}

/**
 * The tar of `files` (paths relative to `cwd`), as the docker CLI writes a context: regular files,
 * directories and symlinks (other types left out), owners 0:0 without names, the modes exactly as on
 * disk, mtimes truncated to the second, a second name of an inode as a hard link to the first.
 */
async function* packEntries(cwd: string, files: string[]): AsyncGenerator<Buffer> {
  const firstName = new Map<string, string>();
  for (const rel of files) {
    const abs = path.join(cwd, rel);
    const st = await fsp.lstat(abs, { bigint: true });
    const base = { path: rel, mode: Number(st.mode & 0o7777n), uid: 0, gid: 0, mtime: { sec: mtimeOf(st).sec, nsec: 0 } };
    if (st.isDirectory()) yield tarHeader({ ...base, type: 'dir' });
    else if (st.isSymbolicLink()) yield tarHeader({ ...base, type: 'symlink', linkTarget: await fsp.readlink(abs) });
    else if (st.isFile()) {
      const inode = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1n ? firstName.get(inode) : undefined;
      if (first !== undefined) {
        yield tarHeader({ ...base, type: 'hardlink', linkTarget: first });
        continue;
      }
      if (st.nlink > 1n) firstName.set(inode, rel);
      const size = Number(st.size);
      yield tarHeader({ ...base, type: 'file', size });
      let sent = 0;
      const fh = await fsp.open(abs, 'r');
      try {
        const buf = Buffer.alloc(1 << 20);
        while (sent < size) {
          const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - sent), sent);
          if (bytesRead === 0) break;
          sent += bytesRead;
          yield Buffer.from(buf.subarray(0, bytesRead));
        }
      } finally {
        await fh.close();
      }
      if (sent !== size) throw new UserError(`the build context file ${abs} shrank while it was being sent: build again once nothing writes into the context`);
      yield padding(size);
    }
  }
  yield tarEnd();
}

/** Paths under root that are not ignored, parents before children (directories walked even when excluded). */
async function keptPaths(root: string, ignored: (rel: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    const entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        const before = out.length;
        if (!ignored(r)) out.push(r);
        await walk(r);
        // An excluded directory with re-included content still needs its entry for the files inside.
        if (ignored(r) && out.length > before) out.splice(before, 0, r);
      } else if (!ignored(r)) out.push(r);
    }
  };
  await walk('');
  return out;
}
