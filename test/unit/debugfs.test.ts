import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Debugfs, DebugfsError, failureKind, mayBeMissing, parseBatch } from '../../src/rootfs/debugfs.js';
import { UserError } from '../../src/util/errors.js';

// The one debugfs wrapper: its output is attributed per command (debugfs exits 0 when a command inside a
// batch failed), and a write batch fails on the first command that reported an error, unless the caller
// said that command may find its path missing.

const BANNER = 'debugfs 1.47.0 (5-Feb-2023)\n';
const nf = (m: string): string => `debugfs: Command not found ${m}\n`;
const echo = (c: string): string => `debugfs: ${c}\n`;

describe('parseBatch: debugfs output attributed to each command', () => {
  const cases: { name: string; commands: string[]; stdout: string; stderr: string; want: ReturnType<typeof parseBatch> }[] = [
    {
      name: 'all good, with a new inode line and no errors',
      commands: ['mkdir /a', 'write f /a/f'],
      stdout: echo('M0') + echo('mkdir /a') + echo('M1') + echo('write f /a/f') + 'Allocated inode: 13\n' + echo('M2'),
      stderr: BANNER + nf('M0') + nf('M1') + nf('M2'),
      want: { results: [{ command: 'mkdir /a', out: '' }, { command: 'write f /a/f', out: 'Allocated inode: 13\n' }] },
    },
    {
      name: 'the middle command fails: two error lines, joined',
      commands: ['mkdir /a', 'mkdir /a', 'sif /a mode 040755'],
      stdout: echo('M0') + echo('mkdir /a') + echo('M1') + echo('mkdir /a') + echo('M2') + echo('sif /a mode 040755') + echo('M3'),
      stderr: BANNER + nf('M0') + nf('M1') + 'ext2fs_mkdir: Ext2 directory already exists while creating directory "a"\nmkdir: Ext2 directory already exists \n' + nf('M2') + nf('M3'),
      want: {
        results: [
          { command: 'mkdir /a', out: '' },
          { command: 'mkdir /a', out: '', error: 'ext2fs_mkdir: Ext2 directory already exists while creating directory "a"; mkdir: Ext2 directory already exists' },
          { command: 'sif /a mode 040755', out: '' },
        ],
      },
    },
    {
      name: 'an error without a trailing newline runs into the next marker line',
      commands: ['ea_set /zz user.x 1'],
      stdout: echo('M0') + echo('ea_set /zz user.x 1') + echo('M1'),
      stderr: BANNER + nf('M0') + '/zz: File not found by ext2_lookup ' + nf('M1'),
      want: { results: [{ command: 'ea_set /zz user.x 1', out: '', error: '/zz: File not found by ext2_lookup' }] },
    },
    {
      name: 'a stat output holding a line that looks like an echo stays with its command',
      commands: ['cat /f', 'stat /'],
      stdout: echo('M0') + echo('cat /f') + 'debugfs: stat /\n' + echo('M1') + echo('stat /') + 'Inode: 2   Type: directory\n' + echo('M2'),
      stderr: BANNER + nf('M0') + nf('M1') + nf('M2'),
      want: { results: [{ command: 'cat /f', out: 'debugfs: stat /\n' }, { command: 'stat /', out: 'Inode: 2   Type: directory\n' }] },
    },
    {
      name: 'the image cannot be opened',
      commands: ['stat /'],
      stdout: echo('M0') + echo('stat /') + echo('M1'),
      stderr: BANNER + 'debugfs: Bad magic number in super-block while trying to open img\n' + nf('M0') + 'stat: Filesystem not open\n' + nf('M1'),
      want: { openError: 'debugfs: Bad magic number in super-block while trying to open img', results: [] },
    },
    {
      name: 'debugfs ended early (killed): the command without its marker failed, the rest did not run',
      commands: ['write f /a', 'write f /b', 'write f /c'],
      stdout: echo('M0') + echo('write f /a') + echo('M1') + echo('write f /b'),
      stderr: BANNER + nf('M0') + nf('M1'),
      want: { results: [{ command: 'write f /a', out: '' }, { command: 'write f /b', out: '', error: 'debugfs ended or lost its place before this command completed' }] },
    },
    {
      name: 'no output at all (not debugfs)',
      commands: ['stat /'],
      stdout: '',
      stderr: '',
      want: { openError: 'debugfs printed nothing', results: [] },
    },
  ];
  test.each(cases)('$name', ({ commands, stdout, stderr, want }) => {
    const marks = [...commands.keys(), commands.length].map((i) => `M${i}`);
    expect(parseBatch(commands, marks, stdout, stderr)).toEqual(want);
  });

  test.each([
    ['rm: File not found by ext2_lookup while trying to resolve filename', 'missing'],
    ['write: Could not allocate block in ext2 filesystem', 'full'],
    ['ext2fs_mkdir: No free space in the directory', 'full'],
    ['rmdir: directory not empty', 'other'],
    ["Couldn't parse 'zz' for field mode.", 'other'],
  ])('failureKind(%s) = %s', (error, kind) => {
    expect(failureKind(error)).toBe(kind);
  });
});

describe('Debugfs on a real image', () => {
  let work: string;
  let image: string;
  let host: string;
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-debugfs-'));
    image = path.join(work, 'img.ext4');
    host = path.join(work, 'hello');
    fs.writeFileSync(host, 'hello\n');
    execFileSync('truncate', ['-s', '8M', image]);
    execFileSync('mkfs.ext4', ['-q', '-F', image], { stdio: 'pipe' });
  });
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  test('a write batch writes, and read gives each command its output and error', async () => {
    const d = new Debugfs(image);
    await d.write(['mkdir /etc', `write ${host} /etc/hostname`, 'sif /etc/hostname mode 0100600']);
    const [etc, missing, file] = await d.read(['stat /etc', 'stat /nope', 'stat /etc/hostname']);
    expect(etc?.out).toMatch(/Type: directory/);
    expect(missing?.out).toBe('');
    expect(missing?.error).toMatch(/File not found by ext2_lookup/);
    expect(file?.out).toMatch(/Type: regular\s+Mode:\s+0600/);
    expect(file?.error).toBeUndefined();
  });

  test('writing into a missing directory is an error naming the image and the command (debugfs itself exits 0)', async () => {
    const cmd = `write ${host} /missing/dir/f`;
    // The premise: debugfs reports the failure only in its output.
    expect(() => execFileSync('debugfs', ['-w', '-R', cmd, image], { stdio: 'pipe' })).not.toThrow();
    const err = await new Debugfs(image).write(['mkdir /ok', cmd, 'mkdir /after']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DebugfsError);
    expect(err).toBeInstanceOf(UserError);
    expect((err as DebugfsError).message).toContain(image);
    expect((err as DebugfsError).message).toContain(cmd);
    expect((err as DebugfsError).message).toMatch(/File not found by ext2_lookup/);
  });

  test('only the listed command may fail, and only because its path is missing', async () => {
    const d = new Debugfs(image);
    await d.write([mayBeMissing('rm /not-there'), 'mkdir /d', `write ${host} /d/f`]);
    // The same rm without the tolerance fails.
    await expect(d.write(['rm /not-there'])).rejects.toThrow(/rm \/not-there/);
    // Tolerated "missing" does not tolerate another error of the same command: /d is not empty.
    const err = await d.write([mayBeMissing('rmdir /d')]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DebugfsError);
    expect((err as DebugfsError).kind).toBe('other');
    expect((err as DebugfsError).message).toMatch(/directory not empty/);
  });

  test('a full file system is kind "full"', async () => {
    const small = path.join(work, 'small.ext4');
    execFileSync('truncate', ['-s', '1M', small]);
    execFileSync('mkfs.ext4', ['-q', '-F', small], { stdio: 'pipe' });
    const big = path.join(work, 'big');
    fs.writeFileSync(big, Buffer.alloc(4 << 20, 1));
    const err = await new Debugfs(small).write([`write ${big} /big`]).catch((e: unknown) => e);
    expect((err as DebugfsError).kind).toBe('full');
  });

  test('an image debugfs cannot open is one error naming it', async () => {
    const bad = path.join(work, 'not-ext4');
    fs.writeFileSync(bad, Buffer.alloc(1 << 20));
    await expect(new Debugfs(bad).read(['stat /'])).rejects.toThrow(new RegExp(`debugfs cannot open ${bad}: .*Bad magic number`));
  });

  test('a command that would run on as a second command is refused before debugfs runs', async () => {
    await expect(new Debugfs(image).write(['mkdir /a\nrm /etc/hostname'])).rejects.toThrow(/not a debugfs command/);
  });

  test('commands in more than one chunk keep their order and groups', async () => {
    const many = path.join(work, 'many.ext4');
    execFileSync('truncate', ['-s', '32M', many]);
    execFileSync('mkfs.ext4', ['-q', '-F', '-N', '4096', many], { stdio: 'pipe' });
    const d = new Debugfs(many);
    const names = Array.from({ length: 2500 }, (_, i) => `/c${i}`);
    await d.write([...names.slice(0, 1999).map((n) => `mkdir ${n}`), [`mkdir ${names[1999]}`, `cd ${names[1999]}`, 'mknod p p', 'cd /'], ...names.slice(2000).map((n) => `mkdir ${n}`)]);
    const r = await d.read([`stat ${names[2499]}`, `stat ${names[1999]}/p`]);
    expect(r[0]?.out).toMatch(/Type: directory/);
    expect(r[1]?.out).toMatch(/Type: FIFO/);
  });
});
