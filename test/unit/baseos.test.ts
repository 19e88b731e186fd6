import { expect, test } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalContext } from '../../src/source/context.js';
import { buildPlan } from '../../src/dockerfile/plan.js';
import { tagFromImageRef } from '../../src/oci/image-config.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

test.each([
  ['debian', 'debian:bookworm-slim', 'debian', '_/debian:bookworm-slim'],
  ['ubuntu', 'ubuntu:24.04', 'ubuntu', '_/ubuntu:24.04'],
  ['alpine', 'alpine:3.20', 'alpine', '_/alpine:3.20'],
])('baseos/%s passes the front end: FROM %s, SSH user %s, derived tag %s', async (dir, from, user, tag) => {
  const df = path.join(ROOT, 'baseos', dir, 'Dockerfile');
  const plan = await buildPlan(fs.readFileSync(df, 'utf8'), { context: await LocalContext.open(path.dirname(df), df), source: { kind: 'local', ref: df, dockerfile: df } });
  const stage = plan.stages[0]!;
  expect(stage.base).toEqual({ kind: 'image', ref: from });
  expect(stage.steps.find((s) => s.keyword === 'ARG')?.args).toEqual([{ name: 'SSH_USER', value: user }]);
  expect(stage.config.cmd).toEqual(['/sbin/init']);
  const conf = stage.steps.find((s) => s.keyword === 'COPY')?.resources?.[0];
  expect(conf?.path).toBe('sshd-firebuild.conf');
  expect(fs.readFileSync(path.join(path.dirname(df), 'sshd-firebuild.conf'), 'utf8')).toMatch(/^PasswordAuthentication no$/m);
  expect(tagFromImageRef(from)).toBe(tag);
});
