import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { extract as tarExtract } from 'tar';
import type { BuildContext } from '../dockerfile/context.js';
import type { Step } from '../dockerfile/plan-schema.js';
import { batch, quote } from '../rootfs/debugfs.js';
import { httpFetch } from '../source/http.js';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';

/**
 * The file-system steps of the VM build engine, applied to the stage's ext4 image offline through
 * debugfs (nothing is mounted, nothing of the image runs on the host): COPY and ADD (local files and
 * directories with .dockerignore, URLs, heredocs, local tar archives extracted, files of another stage's
 * image), and WORKDIR. Owners follow Docker: 0:0 unless --chown, whose names are resolved against the
 * image's own /etc/passwd and /etc/group; WORKDIR creates what is missing owned by the current USER.
 */
export interface Owner { uid: number; gid: number }
export interface Accounts { passwd: string; group: string }

async function dumpFile(image: string, p: string): Promise<string> {
  const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'firebuild-dump-'));
  try {
    const dest = path.join(tmp, 'f');
    await exec('debugfs', ['-R', `dump ${quote(p)} ${dest}`, image], { allowFailure: true });
    return await fsp.readFile(dest, 'utf8').catch(() => '');
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

export async function imageAccounts(image: string): Promise<Accounts> {
  return { passwd: await dumpFile(image, '/etc/passwd'), group: await dumpFile(image, '/etc/group') };
}

function lookup(db: string, name: string): string[] | undefined {
  for (const line of db.split('\n')) {
    const f = line.split(':');
    if (f[0] === name) return f;
  }
  return undefined;
}

interface Where { file: string; line: number }

/** `--chown user[:group]`: a number stands for itself (and for the group when none is given); names come from the image. */
export function chownOwner(spec: string | undefined, acc: Accounts, where: Where): Owner {
  if (!spec) return { uid: 0, gid: 0 };
  const [u = '', g] = spec.split(':');
  let uid: number;
  let gid: number;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    gid = uid;
  } else {
    const pw = lookup(acc.passwd, u);
    if (!pw) throw new UserError(`--chown user ${u} is not in the image's /etc/passwd: create the user in an earlier RUN or give a number`, where);
    uid = Number(pw[2]);
    gid = Number(pw[3]);
  }
  if (g !== undefined && g !== '') gid = groupId(g, acc, where);
  return { uid, gid };
}

function groupId(g: string, acc: Accounts, where: Where): number {
  if (/^\d+$/.test(g)) return Number(g);
  const gr = lookup(acc.group, g);
  if (!gr) throw new UserError(`group ${g} is not in the image's /etc/group: create it in an earlier RUN or give a number`, where);
  return Number(gr[2]);
}

/** The current USER as an owner (WORKDIR): a name from /etc/passwd, or a number (group 0 when it has no entry). */
export function userOwner(user: string, acc: Accounts, where: Where): Owner {
  if (!user) return { uid: 0, gid: 0 };
  const [u = '', g] = user.split(':');
  const pw = lookup(acc.passwd, u) ?? (/^\d+$/.test(u) ? acc.passwd.split('\n').map((l) => l.split(':')).find((f) => f[2] === u) : undefined);
  if (!pw && !/^\d+$/.test(u)) throw new UserError(`USER ${u} is not in the image's /etc/passwd`, where);
  const owner = { uid: pw ? Number(pw[2]) : Number(u), gid: pw ? Number(pw[3]) : 0 };
  if (g) owner.gid = groupId(g, acc, where);
  return owner;
}

type Kind = 'file' | 'dir' | 'symlink' | 'other' | 'missing';

/** The type of each path in the image (one debugfs run). */
async function statPaths(image: string, paths: string[]): Promise<Map<string, Kind>> {
  const uniq = [...new Set(paths)];
  const out = await batch(image, uniq.map((p) => `stat ${quote(p)}`));
  const m = new Map<string, Kind>();
  uniq.forEach((p, i) => {
    const t = /Type: (\w+)/.exec(out[i] ?? '')?.[1];
    m.set(p, t === 'regular' ? 'file' : t === 'directory' ? 'dir' : t === 'symlink' ? 'symlink' : t ? 'other' : 'missing');
  });
  return m;
}

function ancestors(p: string): string[] {
  const out: string[] = [];
  let d = path.posix.dirname(p);
  while (d !== '/') {
    out.unshift(d);
    d = path.posix.dirname(d);
  }
  return out;
}

/** Run debugfs -w commands; a full file system or any error is a UserError naming the step. */
async function write(image: string, commands: string[], where: Where, what: string): Promise<void> {
  for (let i = 0; i < commands.length; i += 2000) {
    const r = await exec('debugfs', ['-w', '-f', '-', image], { input: commands.slice(i, i + 2000).join('\n') + '\n', allowFailure: true });
    const text = r.stdout + r.stderr;
    if (/No free space|Could not allocate|Ran out of/i.test(text)) throw new UserError(`${what} at ${where.file}:${where.line}: the build disk is full: grow it with --size`, where);
    const bad = text.split('\n').find((l) => /^\w+: .*(not found|failed|Invalid|Filesystem opened read\/only|No such)/i.test(l) && !/stat: File not found/.test(l));
    if (r.code !== 0 || bad) throw new UserError(`${what} at ${where.file}:${where.line} failed in debugfs: ${bad ?? text.trim().split('\n').pop()}`, where);
  }
}

/** WORKDIR: create each missing directory of `dir`, owned by the current USER, mode 0755. */
export async function applyWorkdir(image: string, dir: string, owner: Owner, where: Where): Promise<void> {
  const parts = [...ancestors(dir), dir].filter((d) => d !== '/');
  const kinds = await statPaths(image, parts);
  const cmds: string[] = [];
  for (const d of parts) {
    const k = kinds.get(d);
    if (k === 'dir' || k === 'symlink') continue;
    if (k !== 'missing') throw new UserError(`WORKDIR ${dir}: ${d} exists and is not a directory`, where);
    cmds.push(`mkdir ${quote(d)}`, `sif ${quote(d)} mode 040755`, `sif ${quote(d)} uid ${owner.uid}`, `sif ${quote(d)} gid ${owner.gid}`);
  }
  if (cmds.length) await write(image, cmds, where, 'WORKDIR');
}

interface Placement { dest: string; type: 'file' | 'dir' | 'symlink'; host?: string; mode: number; linkTarget?: string }

/** Walk a host directory: every entry under it, parents first, honouring an ignore predicate on context-relative paths. */
async function walk(root: string, rel: string, ignored: (rel: string) => boolean, out: { rel: string; abs: string }[], base = root): Promise<void> {
  const dir = path.join(root, rel);
  for (const name of (await fsp.readdir(dir)).sort()) {
    const r = path.join(rel, name);
    if (ignored(path.relative(base, path.join(root, r)))) continue;
    out.push({ rel: r, abs: path.join(root, r) });
    const st = await fsp.lstat(path.join(root, r));
    if (st.isDirectory()) await walk(root, r, ignored, out, base);
  }
}

async function placeTree(hostDir: string, dest: string, ignored: (rel: string) => boolean, ctxBase: string, forcedMode: number | undefined, out: Placement[]): Promise<void> {
  const entries: { rel: string; abs: string }[] = [];
  await walk(hostDir, '', (r) => ignored(path.relative(ctxBase, path.join(hostDir, r))), entries, hostDir);
  for (const e of entries) {
    const st = await fsp.lstat(e.abs);
    const d = path.posix.join(dest, e.rel.split(path.sep).join('/'));
    if (st.isDirectory()) out.push({ dest: d, type: 'dir', mode: forcedMode ?? st.mode & 0o7777 });
    else if (st.isSymbolicLink()) out.push({ dest: d, type: 'symlink', mode: 0o777, linkTarget: await fsp.readlink(e.abs) });
    else if (st.isFile()) out.push({ dest: d, type: 'file', host: e.abs, mode: forcedMode ?? st.mode & 0o7777 });
  }
}

export interface CopyInputs {
  step: Step;
  /** Absolute destination (relative ones already joined to WORKDIR). */
  dest: string;
  context: BuildContext;
  /** For COPY --from=<stage>: that stage's image. */
  fromImage?: string;
  owner: Owner;
  scratch: string;
}

/** COPY / ADD with Docker's destination rules: a trailing slash, several sources or a directory source make `dest` a directory. */
export async function applyCopy(image: string, c: CopyInputs): Promise<number> {
  const where = { file: c.step.file, line: c.step.line };
  const what = c.step.keyword;
  const resources = c.step.resources ?? [];
  const mode = c.step.chmod ? parseInt(c.step.chmod, 8) : undefined;
  if (c.step.chmod && (!/^[0-7]{3,4}$/.test(c.step.chmod))) throw new UserError(`${what} --chmod=${c.step.chmod}: give octal permissions such as 0644`, where);
  const kinds0 = await statPaths(image, [c.dest]);
  const destIsDir = c.dest.endsWith('/') || resources.length > 1 || (c.step.sources ?? []).some((s) => /[*?[]/.test(s)) || kinds0.get(c.dest.replace(/\/+$/, '') || '/') === 'dir';
  const dest = c.dest === '/' ? '/' : c.dest.replace(/\/+$/, '');
  const placements: Placement[] = [];
  let n = 0;
  for (const r of resources) {
    const stagingFile = path.join(c.scratch, `r${n++}`);
    const single = (host: string, name: string, fileMode: number): void => {
      placements.push({ dest: destIsDir ? path.posix.join(dest, name) : dest, type: 'file', host, mode: mode ?? fileMode });
    };
    if (r.kind === 'url') {
      const res = await httpFetch(r.url!);
      if (!res.ok) throw new UserError(`ADD ${r.url}: HTTP ${res.status}`, where);
      await fsp.writeFile(stagingFile, Buffer.from(await res.arrayBuffer()));
      single(stagingFile, path.posix.basename(new URL(r.url!).pathname) || 'index.html', 0o600);
    } else if (r.kind === 'heredoc') {
      const h = (c.step.heredocs ?? []).find((x) => x.name === r.source);
      await fsp.writeFile(stagingFile, h?.content ?? '');
      single(stagingFile, r.source, 0o644);
    } else if (r.kind === 'stage' || r.kind === 'image') {
      if (!c.fromImage) throw new UserError(`${what} --from: the source image is not available`, where);
      const out = path.join(c.scratch, `from${n}`);
      await fsp.mkdir(out, { recursive: true });
      const src = r.path ?? r.source;
      const st = await statPaths(c.fromImage, [src]);
      const kind = st.get(src);
      if (kind === 'missing') throw new UserError(`${what} --from: ${src} does not exist in the source stage`, where);
      if (kind === 'dir') {
        await exec('debugfs', ['-R', `rdump ${quote(src)} ${out}`, c.fromImage]);
        await placeTree(path.join(out, path.posix.basename(src)), dest, () => false, out, mode, placements);
        if (!placements.some((p) => p.dest === dest)) placements.unshift({ dest, type: 'dir', mode: 0o755 });
      } else {
        await exec('debugfs', ['-R', `dump -p ${quote(src)} ${stagingFile}`, c.fromImage]);
        const s = await fsp.stat(stagingFile);
        single(stagingFile, path.posix.basename(src), s.mode & 0o7777);
      }
    } else if (c.context.kind === 'local' && r.path !== undefined) {
      const abs = path.join(c.context.root, r.path);
      // The plan checked this; checked again here, as the file is read now: never a host file outside the context.
      const [real, root] = await Promise.all([fsp.realpath(abs), fsp.realpath(c.context.root)]);
      if (real !== root && !real.startsWith(root + path.sep)) throw new UserError(`${what} source ${r.source} resolves to ${real}, outside the build context`, where);
      const st = await fsp.stat(real);
      if (r.extract) {
        const out = path.join(c.scratch, `x${n}`);
        await fsp.mkdir(out, { recursive: true });
        await tarExtract({ file: real, cwd: out, preservePaths: false, preserveOwner: false });
        await placeTree(out, dest, () => false, out, mode, placements);
      } else if (st.isDirectory()) {
        placements.push({ dest, type: 'dir', mode: 0o755 });
        await placeTree(real, dest, (rel) => c.context.ignored(rel), root, mode, placements);
      } else {
        single(real, path.posix.basename(r.path), st.mode & 0o7777);
      }
    } else if (r.url) {
      const res = await httpFetch(r.url);
      await fsp.writeFile(stagingFile, Buffer.from(await res.arrayBuffer()));
      single(stagingFile, path.posix.basename(r.path ?? r.source), r.mode ?? 0o644);
    } else {
      throw new UserError(`${what} source ${r.source} of kind ${r.kind} is not supported by the vm engine yet: use --engine docker`, where);
    }
  }
  // Directories the placements need, then the placements; existing directories stay as they are.
  const need = new Set<string>();
  for (const p of placements) for (const a of ancestors(p.dest)) need.add(a);
  const all = [...need, ...placements.map((p) => p.dest)];
  const kinds = await statPaths(image, all);
  const cmds: string[] = [];
  const own = (p: string): string[] => [`sif ${quote(p)} uid ${c.owner.uid}`, `sif ${quote(p)} gid ${c.owner.gid}`];
  for (const d of [...need].sort((a, b) => a.split('/').length - b.split('/').length)) {
    if (kinds.get(d) !== 'missing') continue;
    cmds.push(`mkdir ${quote(d)}`, `sif ${quote(d)} mode 040755`, ...own(d));
    kinds.set(d, 'dir');
  }
  for (const p of placements) {
    const k = kinds.get(p.dest);
    if (p.type === 'dir') {
      if (k === 'dir') continue;
      if (k !== 'missing') cmds.push(`rm ${quote(p.dest)}`);
      cmds.push(`mkdir ${quote(p.dest)}`, `sif ${quote(p.dest)} mode 0${(0o40000 | p.mode).toString(8)}`, ...own(p.dest));
      kinds.set(p.dest, 'dir');
      continue;
    }
    if (k === 'dir') throw new UserError(`${what}: cannot replace the directory ${p.dest} with a file`, where);
    if (k === 'file' || k === 'symlink' || k === 'other') cmds.push(`rm ${quote(p.dest)}`);
    if (p.type === 'symlink') cmds.push(`symlink ${quote(p.dest)} ${quote(p.linkTarget ?? '')}`, ...own(p.dest));
    else cmds.push(`write ${quote(p.host!)} ${quote(p.dest)}`, `sif ${quote(p.dest)} mode 0${(0o100000 | p.mode).toString(8)}`, ...own(p.dest));
    kinds.set(p.dest, p.type);
  }
  await write(image, cmds, where, what);
  return placements.length;
}

