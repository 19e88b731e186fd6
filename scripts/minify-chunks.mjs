#!/usr/bin/env node
// Minifies the chunks ncc writes next to a bundle (<id>.index.js): `ncc --minify` minifies only the
// bundle's index.js, and with one shared core nearly all code sits in chunks (each action's program and
// what the actions share), which unminified were 12 MB and slower to load than the five old bundles.
// Same options as ncc uses for index.js (terser: no compress, names mangled but class and function names
// kept, module code), with @swc/core (already a dev dependency, through the tests): same input, same bytes.
// usage: node scripts/minify-chunks.mjs <dir>
import { minify } from '@swc/core';
import * as fs from 'node:fs';
import * as path from 'node:path';

const dir = process.argv[2];
if (!dir || process.argv.length > 3) {
  console.error('usage: node scripts/minify-chunks.mjs <dir of an ncc bundle>');
  process.exit(2);
}
const chunks = fs.readdirSync(dir).filter((f) => /^\d+\.index\.js$/.test(f)).sort();
for (const f of chunks) {
  const file = path.join(dir, f);
  const out = await minify(fs.readFileSync(file, 'utf8'), {
    module: true,
    compress: false,
    mangle: { keep_classnames: true, keep_fnames: true },
    format: { comments: 'some' },
  });
  fs.writeFileSync(file, out.code);
}
console.log(`minified ${chunks.length} chunk(s) in ${dir}`);
