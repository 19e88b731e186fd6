// The userspace ext4 writer on synthetic content, each case in its own process (peak memory its own),
// beside the floor on the same content: writing the bytes to a file (1 GiB case) and `mkfs.ext4 -d` of
// the same tree extracted on the host (small-files case; the writer itself never touches the host tree).
// usage: npm run build && node bench/ext4-writer.mjs [WORKDIR]   -> prints JSON lines
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const SMALL = Number(process.env.BENCH_FILES ?? 50000);
const BIG = 1 << 30;
const meta = (mode) => ({ mode, uid: 0, gid: 0, mtime: { sec: 1700000000, nsec: 0 } });
const smallContent = (i) => Buffer.alloc(1000 + (i % 7) * 500, (i % 250) + 1);
function bigChunk(i) { const b = Buffer.alloc(1 << 20, (i % 251) + 1); b.writeUInt32LE(i, 0); return b; }

if (process.argv[2] === '--child') {
  const { Ext4Writer } = await import('../lib/rootfs/ext4-writer.js');
  const [, , , kind, img] = process.argv;
  const t0 = process.hrtime.bigint();
  const w = await Ext4Writer.create(img);
  if (kind === 'big') {
    async function* data() { for (let i = 0; i < BIG >> 20; i++) yield bigChunk(i); }
    await w.addFile('/big', meta(0o644), BIG, data());
  } else {
    async function* one(b) { yield b; }
    for (let i = 0; i < SMALL; i++) { const b = smallContent(i); await w.addFile(`/d${i % 500}/f${i}`, meta(0o644), b.length, one(b)); }
  }
  const r = await w.finish();
  process.stdout.write(JSON.stringify({ seconds: Number(process.hrtime.bigint() - t0) / 1e9, peakRssKiB: process.resourceUsage().maxRSS, ...r }) + '\n');
  process.exit(0);
}

const work = fs.mkdtempSync(path.join(process.argv[2] ?? os.tmpdir(), 'bench-ext4-writer-'));
const self = fileURLToPath(import.meta.url);
const timed = (fn) => { const t0 = process.hrtime.bigint(); fn(); return Number(process.hrtime.bigint() - t0) / 1e9; };
try {
  for (const kind of ['big', 'small']) {
    const img = path.join(work, `${kind}.ext4`);
    const r = spawnSync(process.execPath, [self, '--child', kind, img], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
    const writer = JSON.parse(r.stdout);
    execFileSync('e2fsck', ['-fn', img], { stdio: 'ignore' });
    fs.rmSync(img);
    let floor;
    if (kind === 'big') {
      const f = path.join(work, 'big.bin');
      floor = { what: 'write the bytes to a file', seconds: timed(() => { const fd = fs.openSync(f, 'w'); for (let i = 0; i < BIG >> 20; i++) fs.writeSync(fd, bigChunk(i)); fs.closeSync(fd); }) };
      fs.rmSync(f);
    } else {
      const tree = path.join(work, 'tree');
      const sec = timed(() => {
        for (let i = 0; i < SMALL; i++) { const d = path.join(tree, `d${i % 500}`); if (i < 500) fs.mkdirSync(d, { recursive: true }); fs.writeFileSync(path.join(d, `f${i}`), smallContent(i)); }
        execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-I', '256', '-O', '^has_journal', '-d', tree, path.join(work, 'floor.ext4'), `${Math.ceil((writer.imageBytes * 1.3) / 4096)}`]);
      });
      floor = { what: 'files on the host, then mkfs.ext4 -d', seconds: sec };
      fs.rmSync(tree, { recursive: true });
    }
    process.stdout.write(JSON.stringify({ case: kind === 'big' ? '1 GiB file' : `${SMALL} small files`, writer, floor, ratio: writer.seconds / floor.seconds }) + '\n');
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
