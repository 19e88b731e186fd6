import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildPlan } from '../../src/dockerfile/plan.js';
import { applyCopy } from '../../src/engine/vm-fs.js';
import { Ext4Image } from '../../src/rootfs/ext4-read.js';
import { LocalContext } from '../../src/source/context.js';
import { Downloads } from '../../src/source/downloads.js';
import { mkfsFromDir } from '../helpers/ext4-craft.js';
import { serveDir, type Served } from '../helpers/servers.js';

// The vm engine applies what the front end planned: COPY heredocs under their names with their final
// (tab-stripped, expanded) content, ADD --unpack=true of a URL unpacked as a local archive is, and a
// URL with a ?query to a file destination.

let work: string;
let served: Served;

beforeAll(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'firebuild-vmfs-plan-'));
  fs.mkdirSync(path.join(work, 'www', 'src'), { recursive: true });
  fs.writeFileSync(path.join(work, 'www', 'src', 'inside.txt'), 'from the archive\n');
  execFileSync('tar', ['-czf', path.join(work, 'www', 'a.tar.gz'), '-C', path.join(work, 'www', 'src'), 'inside.txt']);
  fs.mkdirSync(path.join(work, 'ctx'));
  served = await serveDir(path.join(work, 'www'));
});

afterAll(async () => {
  await served.close();
  fs.rmSync(work, { recursive: true, force: true });
});

test('COPY heredocs and ADD --unpack=true of a URL land in the image as planned', async () => {
  const ctx = path.join(work, 'ctx');
  const downloads = new Downloads(undefined, true);
  try {
    const text = `FROM scratch\nENV A=1\nCOPY <<-EOF <<'RAW' /d/\n\tvalue=$A\n\tEOF\nkeep $A\nRAW\nADD --unpack=true ${served.url}/a.tar.gz /u/\nADD ${served.url}/src/inside.txt?v=1 /q/file\n`;
    const plan = await buildPlan(text, { context: await LocalContext.open(ctx, path.join(ctx, 'Dockerfile')), source: { kind: 'literal', ref: '<literal>', dockerfile: 'Dockerfile' }, downloads, allowHostUrls: true });
    const empty = path.join(work, 'empty');
    fs.mkdirSync(empty);
    const img = path.join(work, 'img.ext4');
    mkfsFromDir(empty, img, { sizeMiB: 8 });
    let n = 0;
    for (const step of plan.stages[0]!.steps.filter((s) => s.keyword === 'COPY' || s.keyword === 'ADD')) {
      const scratch = path.join(work, `scratch${n++}`);
      fs.mkdirSync(scratch);
      await applyCopy(img, { step, dest: step.dest!, context: new LocalContext(ctx, []), owner: { uid: 0, gid: 0 }, chowned: false, scratch, downloads });
    }
    const image = await Ext4Image.open(img);
    try {
      const read = async (p: string): Promise<string | undefined> => (await image.readSmall(p))?.toString('utf8');
      expect(await read('/d/EOF')).toBe('value=1\n');
      expect(await read('/d/RAW')).toBe('keep $A\n');
      expect(await read('/u/inside.txt')).toBe('from the archive\n');
      expect(await image.stat('/u/a.tar.gz')).toBeUndefined();
      // A URL with a ?query to a file destination is that file, not a directory.
      expect(await read('/q/file')).toBe('from the archive\n');
    } finally {
      await image.close();
    }
  } finally {
    await downloads.dispose();
  }
});
