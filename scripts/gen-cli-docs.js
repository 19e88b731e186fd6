#!/usr/bin/env node
// Regenerates the command reference in README.md from the CLI definition (run `npm run build` first).
import * as fs from 'node:fs';
import { cliReference, spliceReference } from '../lib/cli/reference.js';

const file = new URL('../README.md', import.meta.url);
fs.writeFileSync(file, spliceReference(fs.readFileSync(file, 'utf8'), cliReference()));
