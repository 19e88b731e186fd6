// A separate process that writes a tag through the real store (the built lib/), for crash and race tests.
// usage: node store-writer.mjs ROOT TAG MODE [FILL] [--overwrite]
//   MODE pause: write part of rootfs.ext4, print WRITING, then hang until killed
//   MODE write: write 4 MiB of FILL and commit; print DONE <sha256>
//   MODE lock:  take the tag's lock, print LOCKED, hang until killed
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { DirectoryStorage } from '../../lib/store/directory.js';
import { withLock } from '../../lib/util/lock.js';

const [root, tag, mode, fill = 'a', flag] = process.argv.slice(2);
const store = new DirectoryStorage({ rootfsRoot: root, kernelRoot: path.join(root, '.kernels'), createRoots: true, lockStaleMs: 2000 });
const forever = () => new Promise(() => setInterval(() => undefined, 1 << 30));

if (mode === 'lock') {
  await withLock(path.join(root, '.locks', 'test'), async () => {
    process.stdout.write('LOCKED\n');
    await forever();
  }, { staleMs: 2000 });
} else {
  try {
    const img = await store.writeImage(tag, async (s) => {
      const fh = await fs.open(s.rootfsPath, 'w');
      const chunk = Buffer.alloc(1 << 20, fill);
      for (let i = 0; i < 4; i++) await fh.write(chunk);
      await fh.close();
      if (mode === 'pause') {
        process.stdout.write('WRITING\n');
        await forever();
      }
      return { type: 'rootfs', source: { kind: 'test', ref: fill }, parents: [], config: {} };
    }, { overwrite: flag === '--overwrite' });
    process.stdout.write(`DONE ${img.metadata.rootfs.sha256}\n`);
  } catch (err) {
    process.stdout.write(`ERROR ${err.message}\n`);
    process.exitCode = 2;
  }
}
