import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { create as tarCreate } from 'tar';
import type { Plan } from '../dockerfile/plan-schema.js';
import type { ResolvedSource } from '../source/resolve.js';
import { plannedDownload, type Downloads } from '../source/downloads.js';
import { exists } from '../util/fs.js';

/**
 * The build context sent to the Docker engine, as the docker CLI makes it: every path .dockerignore
 * keeps (exceptions re-include paths inside excluded directories), the Dockerfile and .dockerignore
 * always, owners zeroed. A Dockerfile outside the context (literal text, http, --context elsewhere) goes
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
    for (const rel of await keptPaths(root, (r) => ctx.ignored(r))) {
      const from = path.join(root, rel);
      const to = path.join(dir, rel);
      const st = await fsp.lstat(from);
      if (st.isDirectory()) await fsp.mkdir(to, { recursive: true, mode: st.mode & 0o7777 });
      else {
        await fsp.mkdir(path.dirname(to), { recursive: true });
        await fsp.cp(from, to, { verbatimSymlinks: true, preserveTimestamps: true });
      }
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
          if (have) await fsp.copyFile(have, to);
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
  return tarCreate({ cwd, portable: true, noDirRecurse: true, follow: false, noMtime: false }, files.length ? files : ['.']) as unknown as Readable;
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
