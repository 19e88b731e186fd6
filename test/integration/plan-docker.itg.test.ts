import { afterAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalContext } from '../../src/source/context.js';
import { buildPlan } from '../../src/dockerfile/plan.js';
import type { Plan } from '../../src/dockerfile/plan-schema.js';
import { tempDir } from '../helpers/cli.js';

/**
 * Conformance with the real Docker engine: the image config firebuild's plan predicts (labels, env,
 * workdir, user, ports, volumes, signal, cmd, entrypoint, healthcheck, onbuild) equals what `docker build`
 * produces for the same Dockerfile and build args. The classic builder of this host's Docker runs them.
 */
const CORPUS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dockerfiles');
const DOCKER = fs.existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const built: string[] = [];

afterAll(() => {
  if (built.length) execFileSync(DOCKER, ['rmi', '-f', ...built], { stdio: 'ignore' });
});

function dockerBuild(dir: string, dockerfile: string, buildArgs: Record<string, string>, target?: string): Record<string, unknown> {
  const args = ['build', '-q', '-f', path.join(dir, dockerfile), ...Object.entries(buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]), ...(target ? ['--target', target] : []), dir];
  const id = execFileSync(DOCKER, args, { encoding: 'utf8', env: { ...process.env, DOCKER_BUILDKIT: '0' } }).trim();
  built.push(id);
  return JSON.parse(execFileSync(DOCKER, ['image', 'inspect', '--format', '{{json .Config}}', id], { encoding: 'utf8' })) as Record<string, unknown>;
}

function predicted(plan: Plan): Record<string, unknown> {
  const c = plan.stages.find((s) => s.index === plan.target.index)!.config;
  const hc = c.healthcheck;
  return {
    Labels: c.labels,
    Env: c.env,
    WorkingDir: c.workingDir,
    User: c.user,
    ExposedPorts: c.exposedPorts.sort(),
    Volumes: c.volumes.sort(),
    StopSignal: c.stopSignal,
    Cmd: c.cmd,
    Entrypoint: c.entrypoint,
    OnBuild: c.onBuild,
    Healthcheck: hc ? { Test: hc.test, Interval: hc.intervalNs ?? 0, Timeout: hc.timeoutNs ?? 0, StartPeriod: hc.startPeriodNs ?? 0, Retries: hc.retries ?? 0 } : null,
  };
}

function actual(cfg: Record<string, unknown>): Record<string, unknown> {
  const hc = cfg.Healthcheck as Record<string, unknown> | undefined;
  return {
    Labels: cfg.Labels ?? {},
    Env: cfg.Env ?? [],
    WorkingDir: cfg.WorkingDir ?? '',
    User: cfg.User ?? '',
    ExposedPorts: Object.keys((cfg.ExposedPorts as object) ?? {}).sort(),
    Volumes: Object.keys((cfg.Volumes as object) ?? {}).sort(),
    StopSignal: cfg.StopSignal ?? '',
    Cmd: cfg.Cmd ?? null,
    Entrypoint: cfg.Entrypoint ?? null,
    OnBuild: cfg.OnBuild ?? [],
    Healthcheck: hc ? { Test: hc.Test, Interval: hc.Interval ?? 0, Timeout: hc.Timeout ?? 0, StartPeriod: hc.StartPeriod ?? 0, Retries: hc.Retries ?? 0 } : null,
  };
}

async function compare(dir: string, dockerfile: string, buildArgs: Record<string, string> = {}, target?: string): Promise<void> {
  const context = await LocalContext.open(dir, path.join(dir, dockerfile));
  const plan = await buildPlan(fs.readFileSync(path.join(dir, dockerfile), 'utf8'), { buildArgs, ...(target ? { target } : {}), context, source: { kind: 'local', ref: dockerfile, dockerfile } });
  expect(predicted(plan)).toEqual(actual(dockerBuild(dir, dockerfile, buildArgs, target)));
}

describe('the plan predicts the image config docker build makes', () => {
  // Corpus cases the classic builder can build offline (FROM scratch, no RUN, no BuildKit-only syntax).
  // Not 05-env-inherit-stage: an ARG of a stage reaches stages built FROM it under BuildKit, which the
  // plan follows (docs/engines.md), not under the classic builder.
  test.each(['01-minimal', '04-env-forms', '06-label-forms', '07-expose-volume', '09-stopsignal-healthcheck', '11-entrypoint-cmd', '12-onbuild', '32-arg-multi', '35-lowercase-keywords'])('%s', async (name) => {
    const dir = path.join(CORPUS, name);
    const caseFile = path.join(CORPUS, `${name}.case.json`);
    const c = fs.existsSync(caseFile) ? (JSON.parse(fs.readFileSync(caseFile, 'utf8')) as { buildArgs?: Record<string, string> }) : {};
    await compare(dir, 'Dockerfile', c.buildArgs ?? {});
  });

  test('expansion: ARG scoping, build args, defaults, quotes and escapes', async () => {
    const dir = await tempDir();
    fs.writeFileSync(path.join(dir, 'Dockerfile'), [
      'ARG V=1',
      'ARG G=global',
      'FROM scratch AS base',
      'ENV BASE_ENV=from-base',
      'FROM base',
      'LABEL before="${V:-x}" g="${G:+set}"',
      'ARG V',
      'ARG W=w-default',
      'ARG EMPTY=',
      'ENV E1=$V E2=${W} E3="${EMPTY:-alt}" E4="${UNSET:+never}" E5=\'$V\' E6=a\\ b E7="q\\"uote" E8=$BASE_ENV',
      'LABEL after=${V:-x} w=$W "k e y"="v a l" dollar=\\$V',
      'WORKDIR /srv/${V}/app',
      'WORKDIR sub',
      'USER ${W}:${V}',
      'EXPOSE ${V}000',
      'VOLUME ["/v/${V}"]',
      'STOPSIGNAL SIGUSR1',
      '',
    ].join('\n'));
    await compare(dir, 'Dockerfile', { W: 'cli-w' });
    await compare(dir, 'Dockerfile', { V: '7' });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('STOPSIGNAL as written, CMD [] (exec form, no arguments), a line ending in an escaped escape', async () => {
    const dir = await tempDir();
    fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch\nSTOPSIGNAL kill\nENV A=x\\\\\nENV B=y\nCMD []\n');
    await compare(dir, 'Dockerfile');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a target stage', async () => {
    const dir = await tempDir();
    fs.writeFileSync(path.join(dir, 'Dockerfile'), 'FROM scratch AS a\nLABEL s=a\nFROM a AS b\nLABEL s=b\nFROM scratch AS c\nLABEL s=c\n');
    await compare(dir, 'Dockerfile', {}, 'b');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
