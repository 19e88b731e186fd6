// One firebuild conversion of a Docker image's export, in its own process so its peak memory is its own:
// `docker export` streamed through the userspace tar reader into the userspace ext4 writer (no host
// extraction, no mkfs). usage: node bench/convert-one.mjs IMAGE WORKDIR  -> prints one JSON object
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DockerEngine } from '../lib/engine/docker-engine.js';
import { convertTarStream } from '../lib/rootfs/convert.js';
import { MemoryLogger } from '../lib/util/logger.js';

const [image, work] = process.argv.slice(2);
const log = new MemoryLogger();
const engine = new DockerEngine(log);
const t0 = process.hrtime.bigint();
const exp = await engine.exportImage(image);
const r = await convertTarStream(exp.stream, { image: path.join(work, 'rootfs.ext4'), what: image, freeBytes: 0, log });
await exp.done();
const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
const st = fs.statSync(path.join(work, 'rootfs.ext4'));
process.stdout.write(JSON.stringify({
  seconds,
  phasesMs: r.timings,
  nodePeakRssKiB: process.resourceUsage().maxRSS,
  contentBytes: r.stats.bytes,
  imageApparentBytes: st.size,
  imageAllocatedBytes: st.blocks * 512,
  entries: r.stats.entries,
}) + '\n');
