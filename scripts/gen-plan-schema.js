#!/usr/bin/env node
// Writes docs/plan.schema.json from the zod schema of the build plan (run `npm run build` first).
import * as fs from 'node:fs';
import { planJsonSchema } from '../lib/dockerfile/plan-schema.js';

fs.writeFileSync(new URL('../docs/plan.schema.json', import.meta.url), JSON.stringify(planJsonSchema(), null, 2) + '\n');
