import * as path from 'node:path';
import { Parser, type ReadEntry } from 'tar';
import { UserError } from '../util/errors.js';
import type { TarStats } from './tar-apply.js';

/**
 * Checks a root file system tar stream entry by entry before anything trusts it: no entry may leave the
 * root (`..`, absolute names, hard links that point outside), no path may pass through a symlink the
 * archive created earlier (an absolute link used as a path, e.g. `lib -> /etc` then `lib/passwd`), and
 * no whiteout may appear (a flattened root file system has none; one means a layer is being passed off
 * as a root file system). Counts what it sees, for sizing.
 *
 * Only the vm engine's `ADD <archive>` still extracts (with GNU tar, into the build directory the step
 * copies from); conversions into ext4 never extract (tar-apply.ts).
 */
export class TarGuard {
  readonly stats: TarStats = { entries: 0, files: 0, dirs: 0, symlinks: 0, hardlinks: 0, devices: 0, bytes: 0 };
  private readonly symlinks = new Set<string>();
  readonly parser: Parser;
  error?: UserError;

  constructor(private readonly what: string) {
    this.parser = new Parser({ strict: true });
    this.parser.on('entry', (e: ReadEntry) => {
      try {
        this.check(e);
      } catch (err) {
        this.error ??= err as UserError;
        this.parser.emit('guard-error', err);
      }
      e.resume();
    });
  }

  /** A clean relative path, or a UserError. */
  private clean(p: string, role: string): string {
    if (p.startsWith('/')) throw this.fail(`${role} ${JSON.stringify(p)} is absolute`);
    const parts = p.split('/').filter((x) => x !== '' && x !== '.');
    if (parts.includes('..')) throw this.fail(`${role} ${JSON.stringify(p)} climbs out of the root with ..`);
    return parts.join('/');
  }

  private fail(why: string): UserError {
    return new UserError(`unsafe entry in ${this.what}: ${why}; refusing to convert it`);
  }

  private check(e: ReadEntry): void {
    const p = this.clean(e.path, 'entry');
    if (p === '') return; // the root itself
    const base = path.posix.basename(p);
    if (base.startsWith('.wh.')) throw this.fail(`whiteout ${JSON.stringify(p)} in what should be a flattened root file system`);
    // No parent of this entry may be a symlink created by the archive.
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if (this.symlinks.has(prefix)) throw this.fail(`entry ${JSON.stringify(p)} goes through the symlink ${JSON.stringify(prefix)}`);
    }
    this.stats.entries++;
    switch (e.type) {
      case 'Directory':
        this.symlinks.delete(p);
        this.stats.dirs++;
        break;
      case 'SymbolicLink':
        this.symlinks.add(p);
        this.stats.symlinks++;
        break;
      case 'Link':
        this.clean(e.linkpath ?? '', `hard link ${JSON.stringify(p)} target`);
        this.symlinks.delete(p);
        this.stats.hardlinks++;
        break;
      case 'CharacterDevice':
      case 'BlockDevice':
      case 'FIFO':
        this.symlinks.delete(p);
        this.stats.devices++;
        break;
      case 'File':
      case 'OldFile':
      case 'ContiguousFile':
        this.symlinks.delete(p);
        this.stats.files++;
        this.stats.bytes += e.size;
        break;
      default:
        throw this.fail(`entry ${JSON.stringify(p)} has unsupported type ${e.type}`);
    }
  }
}
