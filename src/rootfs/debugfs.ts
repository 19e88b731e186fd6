import { createHash, randomBytes } from 'node:crypto';
import { UserError } from '../util/errors.js';
import { exec } from '../util/exec.js';
import { Ext4Image } from './ext4-read.js';

/**
 * Ext4Reader: an ext4 image's tree with types, modes (setuid bits included), owners, sizes, inode numbers
 * (hard links share one), device numbers, symlink targets, xattrs and contents, read in-process
 * (ext4-read.ts), never dumped. And Debugfs: the one way firebuild runs debugfs (the vm engine's and the
 * guest injection's writes into images firebuild owns).
 */
export type EntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface TreeEntry {
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  ino: number;
  linkTarget?: string;
  rdev?: string;
  xattrs?: Record<string, string>;
  sha256?: string;
}

/** What one debugfs command printed: its stdout, and its error (stderr) when it reported one. */
export interface CommandResult {
  command: string;
  out: string;
  error?: string;
}

/** Why a debugfs command failed: a path not found, the file system full, or anything else. */
export type FailureKind = 'missing' | 'full' | 'other';

/**
 * A write command whose failure the caller expects, and which failure: `missing` tolerates only "the path
 * is not there" (an `rm` of what a RUN may have deleted); any other error of that command still fails.
 */
export interface TolerantCommand {
  command: string;
  mayFail: 'missing';
}

export type WriteCommand = string | TolerantCommand;

/** `rm`/`rmdir`/... of a path that may already be gone: only "not found" is tolerated. */
export function mayBeMissing(command: string): TolerantCommand {
  return { command, mayFail: 'missing' };
}

export function failureKind(error: string): FailureKind {
  if (/No free space|Could not allocate|Ran out of/i.test(error)) return 'full';
  if (/File not found by ext2_lookup/.test(error)) return 'missing';
  return 'other';
}

/** A debugfs command that reported an error: names the image, the command and what debugfs said. */
export class DebugfsError extends UserError {
  readonly kind: FailureKind;
  constructor(
    readonly image: string,
    readonly command: string,
    readonly reason: string,
  ) {
    super(`debugfs could not ${JSON.stringify(command.length > 200 ? command.slice(0, 200) + '...' : command)} in ${image}: ${reason}`);
    this.kind = failureKind(reason);
  }
}

// debugfs reads its script with fgets into a BUFSIZ (8 KiB) buffer: a longer line would run on as a second command.
const MAX_LINE = 8000;
// The banner debugfs prints on stderr before the first command.
const BANNER = /^debugfs [\d.]+(-\S+)? \(.*\)\n/;

/**
 * Attribute debugfs's output to each command. debugfs echoes each command on stdout (`debugfs: CMD`) and
 * prints errors on stderr, where nothing says which command they belong to (and stdout is buffered, so the
 * two streams cannot be interleaved). So the script starts with a marker and runs one after each command:
 * an unknown command with a random name, which libss reports on stderr as `debugfs: Command not found MARK`.
 * The stderr between two markers is the error of the command between them; the stdout between a command's
 * echo and its marker's echo is its output. What stderr holds before the first marker (but the banner) is
 * why the image could not be opened. Pure, for table tests: `marks[0]` is the start, `marks[i + 1]` follows
 * `commands[i]`.
 */
export function parseBatch(commands: readonly string[], marks: readonly string[], stdout: string, stderr: string): { openError?: string; results: CommandResult[] } {
  const errText = stderr.replace(BANNER, '');
  const notFound = (m: string): string => `debugfs: Command not found ${m}\n`;
  const startErr = errText.indexOf(notFound(marks[0]!));
  const startOut = stdout.indexOf(`debugfs: ${marks[0]}\n`);
  if (startErr < 0 || startOut < 0) return { openError: (errText.trim() || 'debugfs printed nothing').split('\n')[0]!, results: [] };
  const openError = errText.slice(0, startErr).trim();
  if (openError) return { openError: openError.split('\n')[0]!, results: [] };
  const results: CommandResult[] = [];
  let o = startOut + `debugfs: ${marks[0]}\n`.length;
  let e = startErr + notFound(marks[0]!).length;
  for (const [i, command] of commands.entries()) {
    const echo = `debugfs: ${command}\n`;
    const markEcho = `debugfs: ${marks[i + 1]}\n`;
    const markErr = notFound(marks[i + 1]!);
    const at = stdout.startsWith(echo, o) ? o : -1;
    const end = at < 0 ? -1 : stdout.indexOf(markEcho, at + echo.length);
    const errEnd = errText.indexOf(markErr, e);
    if (at < 0 || end < 0 || errEnd < 0) {
      // debugfs stopped before this command ended (killed, crashed) or split its line: the rest did not run.
      results.push({ command, out: '', error: 'debugfs ended or lost its place before this command completed' });
      break;
    }
    const r: CommandResult = { command, out: stdout.slice(at + echo.length, end) };
    const err = errText.slice(e, errEnd).trim();
    if (err) r.error = err.split('\n').map((l) => l.trim()).filter(Boolean).join('; ');
    results.push(r);
    o = end + markEcho.length;
    e = errEnd + markErr.length;
  }
  return { results };
}

function commandOf(c: WriteCommand): string {
  return typeof c === 'string' ? c : c.command;
}

/**
 * The one way firebuild runs debugfs on an image. `read` runs without -w and returns each command's output
 * and error for the caller to judge (a `stat` of a missing path is an answer, not a failure). `write` runs
 * with -w and has one error policy: the first command that reported an error fails the batch with a
 * DebugfsError naming the image and the command (its `kind` says whether the file system is full), unless
 * the caller marked that command `mayBeMissing` and the error is "not found". debugfs's exit code says
 * nothing of this (it is 0 when a command inside the batch failed), so the output is parsed per command.
 * Commands run in chunks of at most 2000; a group (an array: a `cd` and the `mknod` after it) never
 * straddles two chunks.
 */
export class Debugfs {
  constructor(readonly image: string) {}

  async read(commands: readonly string[]): Promise<CommandResult[]> {
    const out: CommandResult[] = [];
    for (const chunk of chunks(commands.map((c) => [c]))) out.push(...(await this.run(chunk, false)));
    return out;
  }

  async write(commands: readonly (WriteCommand | WriteCommand[])[]): Promise<void> {
    const groups = commands.map((c) => (Array.isArray(c) ? c : [c]));
    for (const chunk of chunks(groups)) {
      const results = await this.run(chunk.map(commandOf), true);
      for (const [i, r] of results.entries()) {
        if (r.error === undefined) continue;
        const c = chunk[i]!;
        if (typeof c !== 'string' && c.mayFail === 'missing' && failureKind(r.error) === 'missing') continue;
        throw new DebugfsError(this.image, r.command, r.error);
      }
    }
  }

  private async run(commands: string[], write: boolean): Promise<CommandResult[]> {
    const nonce = randomBytes(6).toString('hex');
    const marks = [...commands.keys(), commands.length].map((i) => `firebuild_mark_${nonce}_${i}`);
    const lines: string[] = [marks[0]!];
    for (const [i, c] of commands.entries()) {
      // A line break would start another command; `#` makes a comment, which debugfs prints without its echo.
      if (/[\n\r\0]/.test(c) || c.trim() === '' || c.startsWith('#')) throw new UserError(`not a debugfs command: ${JSON.stringify(c.slice(0, 80))}`);
      if (Buffer.byteLength(c) > MAX_LINE) throw new UserError(`a debugfs command for ${this.image} is longer than ${MAX_LINE} bytes: ${JSON.stringify(c.slice(0, 80))}...`);
      lines.push(c, marks[i + 1]!);
    }
    // Exit code: debugfs counts unknown commands (each marker is one), so it is never 0 here and says nothing.
    const r = await exec('debugfs', [...(write ? ['-w'] : []), '-f', '-', this.image], { input: lines.join('\n') + '\n', allowFailure: true });
    if (r.signal) throw new UserError(`debugfs on ${this.image} was killed by ${r.signal}`);
    const { openError, results } = parseBatch(commands, marks, r.stdout, r.stderr);
    if (openError !== undefined) throw new UserError(`debugfs cannot open ${this.image}: ${openError}`);
    return results;
  }
}

/** Groups packed into chunks of at most 2000 commands (a group larger than that is a chunk of its own). */
function chunks<T>(groups: T[][]): T[][] {
  const out: T[][] = [];
  let cur: T[] = [];
  for (const g of groups) {
    if (cur.length && cur.length + g.length > 2000) {
      out.push(cur);
      cur = [];
    }
    cur.push(...g);
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * One argument of a debugfs command line. debugfs (libss) reads a script line by line and splits it at
 * blanks outside double quotes, where a quote inside quotes is written twice and a backslash is an
 * ordinary character. A name with a line break or NUL, or a line longer than debugfs's buffer, could end
 * the command and start another (a path or link target from an untrusted Dockerfile, context or archive):
 * refused.
 */
export function quote(p: string): string {
  if (/[\n\r\0]/.test(p)) throw new UserError(`the path or link target ${JSON.stringify(p.slice(0, 80))} holds a line break or NUL, which firebuild does not write into images: rename it`);
  const q = `"${p.replace(/"/g, '""')}"`;
  // debugfs reads a script line into an 8 KiB buffer: a longer line would run on as a second command.
  if (q.length > 4000) throw new UserError(`the path or link target ${JSON.stringify(p.slice(0, 80))}... is longer than firebuild writes into images (4000 characters)`);
  return q;
}

/** An xattr value as debugfs's ea_list printed it (blanks dropped): a quoted string when printable, else hex. */
export function xattrText(v: Buffer): string {
  const printable = v.length > 0 && v.every((b) => b >= 0x20 && b <= 0x7e);
  return printable ? `"${v.toString('latin1').replace(/ /g, '')}"` : v.toString('hex');
}

/**
 * The tree and files of an ext4 image, read in-process (Ext4Image): nothing of the image is written on
 * the host, whatever its names say.
 */
export class Ext4Reader {
  constructor(readonly image: string) {}

  private async with<T>(f: (img: Ext4Image) => Promise<T>): Promise<T> {
    const img = await Ext4Image.open(this.image);
    try {
      return await f(img);
    } finally {
      await img.close();
    }
  }

  /** Every entry under `under` (default `/`; not `under` itself, nor the root's `lost+found`), sorted by path; `recursive: false` for one level. */
  async list(under = '/', o: { recursive?: boolean } = {}): Promise<TreeEntry[]> {
    return (await this.entries(under, o)).map(({ entry }) => entry);
  }

  private async entries(under: string, o: { recursive?: boolean }): Promise<{ entry: TreeEntry; xattrs: Map<string, Buffer> }[]> {
    return this.with(async (img) => {
      const out: { entry: TreeEntry; xattrs: Map<string, Buffer> }[] = [];
      const top = under === '/' ? '/' : under.replace(/\/+$/, '');
      for await (const e of img.walk(top)) {
        if (e.path === '/lost+found' || e.path.startsWith('/lost+found/')) continue;
        const rel = top === '/' ? e.path : e.path.slice(top.length);
        if (o.recursive === false && rel.lastIndexOf('/') > 0) continue;
        const p = top === '/' ? e.path : `${top}${rel}`;
        const t: TreeEntry = { path: p, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.type === 'dir' || e.type === 'file' || e.type === 'symlink' ? e.size : 0, ino: e.ino };
        if (e.linkTarget !== undefined) t.linkTarget = e.linkTarget;
        if (e.rdev) t.rdev = `${e.rdev.major}:${e.rdev.minor}`;
        out.push({ entry: t, xattrs: e.xattrs });
      }
      return out.sort((a, b) => (a.entry.path < b.entry.path ? -1 : a.entry.path > b.entry.path ? 1 : 0));
    });
  }

  /** The tree with symlink targets, device numbers, xattrs and (optionally) content digests. */
  async tree(opts: { hashes?: boolean; xattrs?: boolean } = {}): Promise<TreeEntry[]> {
    const entries = await this.entries('/', {});
    return this.with(async (img) => {
      for (const { entry: e, xattrs } of entries) {
        if (opts.xattrs !== false && xattrs.size) e.xattrs = Object.fromEntries([...xattrs].map(([k, v]) => [k, xattrText(v)]));
        if (opts.hashes && e.type === 'file') {
          const h = createHash('sha256');
          for await (const c of img.readFile(e.ino)) h.update(c);
          e.sha256 = h.digest('hex');
        }
      }
      return entries.map(({ entry }) => entry);
    });
  }

  /** One file's content (for small files: configs, passwd); symlinks followed inside the image. */
  async readFile(p: string): Promise<Buffer> {
    return this.with(async (img) => {
      const parts: Buffer[] = [];
      for await (const c of img.readFile(p)) parts.push(c);
      return Buffer.concat(parts);
    });
  }
}
