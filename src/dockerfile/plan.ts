import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { ImageConfigSchema, type ImageConfig } from '../store/metadata.js';
import { UserError } from '../util/errors.js';
import type { Downloads } from '../source/downloads.js';
import { httpDigest } from '../source/http.js';
import { dockerfileUrlGuard } from '../net/host-only.js';
import { downloadLimits } from '../util/download.js';
import { isArchive } from './archive.js';
import type { BuildContext } from '../source/context.js';
import { flagValue, parseDockerfile, type ParsedDockerfile, type ParsedInstruction } from './parse.js';
import { PLAN_SCHEMA_VERSION, PlanSchema, type Plan, type Resource, type Stage, type Step } from './plan-schema.js';
import { ExpansionError, processWord, processWords, type Lookup } from './shell-lex.js';
import { parseNameVal, parseWords } from './words.js';

export interface PlanOptions {
  buildArgs?: Record<string, string>;
  /** `--dockerfile-stage`: a stage name or index; the last stage when absent. */
  target?: string;
  context: BuildContext;
  source: Plan['source'];
  /** The config of an external base image (ENV and ONBUILD matter to the plan), when it can be known. */
  baseConfig?: (ref: string) => Promise<Partial<ImageConfig> | undefined>;
  /**
   * Where a build keeps what it fetches (ADD URLs, http context files): each URL is downloaded once, the
   * plan records that file's digest and the build uses that file. Without it (`firebuild plan`) URLs are
   * hashed as they stream and nothing is kept.
   */
  downloads?: Downloads;
  /** Without `downloads`: let ADD URLs reach host-only addresses (--allow-host-urls; net/host-only.ts). */
  allowHostUrls?: boolean;
}

/** Build args Docker defines without an ARG instruction. */
const PREDEFINED_ARGS = ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy'];
const STAGE_NAME_RE = /^[a-z][a-z0-9-_.]*$/;
const DEFAULT_SHELL = ['/bin/sh', '-c'];
const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

interface RawStage {
  index: number;
  name?: string;
  from: ParsedInstruction;
  body: ParsedInstruction[];
}

/** Split instructions into global ARGs and stages. */
function splitStages(df: ParsedDockerfile): { globals: ParsedInstruction[]; stages: RawStage[] } {
  const globals: ParsedInstruction[] = [];
  const stages: RawStage[] = [];
  for (const ins of df.instructions) {
    if (ins.keyword === 'FROM') {
      const words = ins.rest.split(/\s+/).filter(Boolean);
      if (words.length !== 1 && !(words.length === 3 && words[1]?.toLowerCase() === 'as')) {
        throw new UserError('FROM takes an image and an optional AS name: FROM image[:tag] [AS name]', { file: ins.file, line: ins.line });
      }
      const st: RawStage = { index: stages.length, from: ins, body: [] };
      if (words.length === 3) {
        const name = (words[2] as string).toLowerCase();
        if (!STAGE_NAME_RE.test(name)) throw new UserError(`invalid stage name '${words[2]}': use a letter followed by letters, digits, -, _ or .`, { file: ins.file, line: ins.line });
        const dup = stages.find((s) => s.name === name);
        if (dup) throw new UserError(`duplicate stage name '${name}' (first at line ${dup.from.line}): give each stage its own name`, { file: ins.file, line: ins.line });
        st.name = name;
      }
      stages.push(st);
    } else if (stages.length === 0) {
      if (ins.keyword !== 'ARG') throw new UserError(`${ins.keyword} before the first FROM: only ARG may come before FROM`, { file: ins.file, line: ins.line });
      globals.push(ins);
    } else {
      (stages[stages.length - 1] as RawStage).body.push(ins);
    }
  }
  if (stages.length === 0) throw new UserError('the Dockerfile has no FROM instruction: start a stage with FROM image', { file: df.file, line: 1 });
  return { globals, stages };
}

/** Find a stage by name (case-insensitive) or index. */
function findStage(stages: RawStage[], ref: string): RawStage | undefined {
  if (/^\d+$/.test(ref)) return stages[Number(ref)];
  return stages.find((s) => s.name === ref.toLowerCase());
}

function where(ins: ParsedInstruction): { file: string; line: number } {
  return { file: ins.file, line: ins.line };
}

class StageState {
  env = new Map<string, string>();
  args = new Map<string, string | null>();
  config: ImageConfig;
  cmdSetHere = false;

  constructor(base: ImageConfig | undefined) {
    this.config = structuredClone(base ?? ImageConfigSchema.parse({}));
    for (const kv of this.config.env) {
      const i = kv.indexOf('=');
      if (i > 0) this.env.set(kv.slice(0, i), kv.slice(i + 1));
    }
    // ONBUILD triggers of the base run in this stage; this image starts with none of its own.
    this.config.onBuild = [];
  }

  /** ENV beats ARG of the same name (Docker's rule); unset names expand to empty. */
  lookup: Lookup = (name) => {
    if (this.env.has(name)) return this.env.get(name);
    const a = this.args.get(name);
    return a === null ? undefined : a;
  };

  runEnv(): string[] {
    const out = new Map<string, string>();
    for (const [k, v] of this.args) if (v !== null) out.set(k, v);
    for (const [k, v] of this.env) out.set(k, v);
    return [...out].map(([k, v]) => `${k}=${v}`);
  }

  syncEnv(): void {
    this.config.env = [...this.env].map(([k, v]) => `${k}=${v}`);
  }
}

export async function buildPlan(text: string, opts: PlanOptions): Promise<Plan> {
  const df = parseDockerfile(text, opts.source.dockerfile);
  return planFromParsed(df, opts);
}

export async function planFromParsed(df: ParsedDockerfile, opts: PlanOptions): Promise<Plan> {
  const buildArgs = opts.buildArgs ?? {};
  const usedArgs = new Set<string>();
  const escape = df.escape;
  const expandWord = (s: string, lookup: Lookup, ins: ParsedInstruction): string => {
    try {
      return processWord(s, lookup, { escape });
    } catch (err) {
      if (err instanceof ExpansionError) throw new UserError(`${ins.keyword}: ${err.message}`, { ...where(ins), cause: err });
      throw err;
    }
  };
  const expandWords = (s: string, lookup: Lookup, ins: ParsedInstruction): string[] => {
    try {
      return processWords(s, lookup, { escape });
    } catch (err) {
      if (err instanceof ExpansionError) throw new UserError(`${ins.keyword}: ${err.message}`, { ...where(ins), cause: err });
      throw err;
    }
  };

  // Global ARGs: visible to FROM lines, and to stages that redeclare them.
  const globalArgs = new Map<string, string | null>();
  const { globals, stages } = splitStages(df);
  for (const ins of globals) {
    for (const a of parseArgInstruction(ins, escape)) {
      const lookup: Lookup = (n) => globalArgs.get(n) ?? undefined;
      let value: string | null = a.value === null ? null : expandWord(a.value, lookup, ins);
      if (Object.prototype.hasOwnProperty.call(buildArgs, a.name)) {
        value = buildArgs[a.name] as string;
        usedArgs.add(a.name);
      }
      globalArgs.set(a.name, value);
    }
  }
  const globalLookup: Lookup = (n) => globalArgs.get(n) ?? undefined;

  // Resolve each FROM now: the stage graph needs the base of every stage.
  const bases = stages.map((st) => {
    const ins = st.from;
    const words = ins.rest.split(/\s+/).filter(Boolean);
    const ref = expandWord(words[0] as string, globalLookup, ins);
    if (ref === '') throw new UserError('FROM names an empty image (an ARG that is not set?): set the ARG or name the image', where(ins));
    const platform = flagValue(ins, 'platform');
    const lower = ref.toLowerCase();
    const byName = stages.find((s) => s.name === lower);
    let base: Stage['base'];
    if (byName && byName.index < st.index) base = { kind: 'stage', stage: byName.index };
    else if (byName) {
      throw new UserError(`FROM ${ref} names stage '${byName.name}', which is ${byName.index === st.index ? 'this stage itself' : `defined later (line ${byName.from.line})`}: a stage can only build on an earlier one`, where(ins));
    } else if (lower === 'scratch') base = { kind: 'scratch' };
    else base = { kind: 'image', ref };
    return { base, platform: platform === undefined ? undefined : expandWord(platform, globalLookup, ins) };
  });

  // Stage dependencies: FROM a stage, COPY --from, RUN --mount from=.
  const deps = (st: RawStage): number[] => {
    const out = new Set<number>();
    const b = bases[st.index]?.base;
    if (b?.kind === 'stage') out.add(b.stage);
    for (const ins of st.body) {
      const refs: string[] = [];
      if (ins.keyword === 'COPY') {
        const f = flagValue(ins, 'from');
        if (f !== undefined) refs.push(f);
      }
      if (ins.keyword === 'RUN') {
        for (const f of ins.flags.filter((x) => x.name === 'mount')) {
          const from = /(?:^|,)from=([^,]+)/.exec(f.value ?? '')?.[1];
          if (from) refs.push(from);
        }
      }
      for (const r of refs) {
        const idx = stageRefIndex(stages, r, st, ins);
        if (idx !== undefined) out.add(idx);
      }
    }
    return [...out];
  };

  let target: RawStage;
  if (opts.target !== undefined) {
    const t = findStage(stages, opts.target);
    if (!t) {
      const names = stages.map((s) => s.name ?? String(s.index)).join(', ');
      throw new UserError(`--dockerfile-stage ${opts.target} is not a stage of ${df.file}: choose one of ${names}`);
    }
    target = t;
  } else target = stages[stages.length - 1] as RawStage;

  const needed = new Set<number>();
  const visit = (st: RawStage): void => {
    if (needed.has(st.index)) return;
    needed.add(st.index);
    for (const d of deps(st)) visit(stages[d] as RawStage);
  };
  visit(target);

  const planned: Stage[] = [];
  const stageConfigs = new Map<number, ImageConfig>();
  for (const st of stages) {
    if (!needed.has(st.index)) continue;
    const { base, platform } = bases[st.index] as { base: Stage['base']; platform: string | undefined };
    let baseCfg: ImageConfig | undefined;
    if (base.kind === 'stage') baseCfg = stageConfigs.get(base.stage);
    else if (base.kind === 'image' && opts.baseConfig) {
      const c = await opts.baseConfig(base.ref);
      baseCfg = c ? ImageConfigSchema.parse(c) : undefined;
    }
    // Docker gives an image without PATH its default PATH (scratch, or a known base config that lacks it).
    if (base.kind === 'scratch' || (baseCfg && !baseCfg.env.some((e) => e.startsWith('PATH=')))) {
      baseCfg = { ...(baseCfg ?? ImageConfigSchema.parse({})), env: [DEFAULT_PATH, ...(baseCfg?.env ?? [])] };
    }
    const state = new StageState(baseCfg);
    const steps: Step[] = [];
    // ONBUILD triggers of the base run first, as if written right after FROM.
    for (const trigger of baseCfg?.onBuild ?? []) {
      const parsed = parseDockerfile(`FROM scratch\n${trigger}\n`, df.file).instructions[1];
      if (!parsed) continue;
      const ins: ParsedInstruction = { ...parsed, line: st.from.line, endLine: st.from.line, original: `ONBUILD ${trigger}` };
      steps.push({ ...(await planStep(ins, state)), onbuild: true });
    }
    for (const ins of st.body) steps.push(await planStep(ins, state));
    state.syncEnv();
    stageConfigs.set(st.index, state.config);
    const stage: Stage = { index: st.index, ...where(st.from), base, steps, config: state.config };
    if (st.name) stage.name = st.name;
    if (platform) stage.platform = platform;
    planned.push(stage);

    async function planStep(ins: ParsedInstruction, s: StageState): Promise<Step> {
      const step: Step = { keyword: ins.keyword, ...where(ins), original: ins.original };
      const w = (x: string): string => expandWord(x, s.lookup, ins);
      const ws = (x: string): string[] => expandWords(x, s.lookup, ins);
      const cfg = s.config;
      switch (ins.keyword) {
        case 'ARG': {
          step.args = [];
          for (const a of parseArgInstruction(ins, escape)) {
            let value: string | null;
            if (Object.prototype.hasOwnProperty.call(buildArgs, a.name)) {
              value = buildArgs[a.name] as string;
              usedArgs.add(a.name);
            } else if (a.value !== null) value = w(a.value);
            else value = globalArgs.has(a.name) ? (globalArgs.get(a.name) as string | null) : null;
            s.args.set(a.name, value);
            step.args.push({ name: a.name, value });
          }
          break;
        }
        case 'ENV': {
          const pairs = nameVal(ins).map((p) => ({ key: w(p.key), value: w(p.value) }));
          // All pairs of one ENV see the environment from before it (Docker's rule).
          for (const p of pairs) s.env.set(p.key, p.value);
          s.syncEnv();
          step.pairs = pairs;
          break;
        }
        case 'LABEL': {
          step.pairs = nameVal(ins).map((p) => ({ key: w(p.key), value: w(p.value) }));
          for (const p of step.pairs) cfg.labels[p.key] = p.value;
          break;
        }
        case 'MAINTAINER':
          step.value = ins.rest;
          break;
        case 'EXPOSE': {
          step.values = ws(ins.rest).flatMap((p) => normalizePorts(p, ins));
          if (step.values.length === 0) throw new UserError('EXPOSE needs at least one port, e.g. EXPOSE 8080/tcp', where(ins));
          for (const p of step.values) if (!cfg.exposedPorts.includes(p)) cfg.exposedPorts.push(p);
          break;
        }
        case 'VOLUME': {
          step.values = (ins.json ?? ws(ins.rest)).map((v) => (ins.json ? w(v) : v));
          if (step.values.length === 0 || step.values.some((v) => v.trim() === '')) throw new UserError('VOLUME needs a non-empty path', where(ins));
          for (const v of step.values) if (!cfg.volumes.includes(v)) cfg.volumes.push(v);
          break;
        }
        case 'USER': {
          const u = w(ins.rest);
          if (u === '' || /\s/.test(u.trim())) throw new UserError('USER takes one user[:group], by name or number', where(ins));
          step.value = u;
          cfg.user = u;
          break;
        }
        case 'WORKDIR': {
          const d = w(ins.rest);
          if (d === '') throw new UserError('WORKDIR needs a path', where(ins));
          const abs = path.posix.resolve(cfg.workingDir || '/', d);
          step.value = abs;
          cfg.workingDir = abs;
          break;
        }
        case 'STOPSIGNAL': {
          step.value = normalizeSignal(w(ins.rest), ins);
          cfg.stopSignal = step.value;
          break;
        }
        case 'SHELL': {
          if (!ins.json || ins.json.length === 0) throw new UserError('SHELL requires a non-empty JSON array, e.g. SHELL ["/bin/bash", "-c"]', where(ins));
          step.value = JSON.stringify(ins.json);
          step.shell = ins.json;
          cfg.shell = ins.json;
          break;
        }
        case 'CMD':
        case 'ENTRYPOINT': {
          const shell = cfg.shell ?? DEFAULT_SHELL;
          step.form = ins.json ? 'exec' : 'shell';
          step.command = ins.json ?? (ins.rest === '' ? [] : [...shell, ins.rest]);
          if (ins.keyword === 'CMD') {
            cfg.cmd = step.command;
            s.cmdSetHere = true;
          } else {
            cfg.entrypoint = step.command;
            // ENTRYPOINT resets a CMD inherited from the base.
            if (!s.cmdSetHere) cfg.cmd = null;
          }
          break;
        }
        case 'HEALTHCHECK': {
          step.healthcheck = parseHealthcheck(ins, cfg.shell ?? DEFAULT_SHELL);
          cfg.healthcheck = step.healthcheck;
          break;
        }
        case 'ONBUILD': {
          const trigger = ins.rest.trim();
          const kw = trigger.split(/\s+/)[0]?.toUpperCase() ?? '';
          if (kw === 'ONBUILD' || kw === 'FROM' || kw === 'MAINTAINER') throw new UserError(`ONBUILD ${kw} is not allowed`, where(ins));
          // Validate the trigger's own syntax now rather than in the image that inherits it.
          parseDockerfile(`FROM scratch\n${trigger}\n`, ins.file);
          step.value = trigger;
          cfg.onBuild.push(trigger);
          break;
        }
        case 'RUN': {
          const shell = cfg.shell ?? DEFAULT_SHELL;
          if (ins.heredocs.length > 0) {
            step.form = 'shell';
            step.heredocs = ins.heredocs;
            step.command = [...shell, ins.rest];
          } else {
            if (!ins.json && ins.rest === '') throw new UserError('RUN needs a command', where(ins));
            step.form = ins.json ? 'exec' : 'shell';
            step.command = ins.json ?? [...shell, ins.rest];
          }
          const mounts = ins.flags.filter((f) => f.name === 'mount').map((f) => parseMount(f.value ?? '', ins));
          if (mounts.length) step.mounts = mounts;
          const network = flagValue(ins, 'network');
          if (network !== undefined) step.network = network;
          const security = flagValue(ins, 'security');
          if (security !== undefined) step.security = security;
          step.env = s.runEnv();
          step.shell = shell;
          break;
        }
        case 'COPY':
        case 'ADD':
          await planCopy(ins, step, s, w);
          break;
        case 'FROM':
          break;
      }
      return step;
    }
  }

  async function planCopy(ins: ParsedInstruction, step: Step, s: StageState, w: (x: string) => string): Promise<void> {
    let args: string[];
    if (ins.heredocs.length > 0) args = ins.rest.split(/\s+/).filter(Boolean);
    else if (ins.json) args = ins.json.map(w);
    else args = ins.rest.split(/\s+/).filter(Boolean).map(w);
    if (args.length < 2) throw new UserError(`${ins.keyword} needs at least one source and a destination: ${ins.keyword} <src>... <dest>`, where(ins));
    const destRaw = ins.heredocs.length > 0 ? w(args[args.length - 1] as string) : (args[args.length - 1] as string);
    const sources = args.slice(0, -1);
    const wd = s.config.workingDir || '/';
    // A destination ending in / (or `.`) is a directory; relative ones are relative to WORKDIR.
    const isDir = destRaw.endsWith('/') || destRaw === '.' || destRaw.endsWith('/.');
    const joined = path.posix.resolve(wd, destRaw);
    const dest = isDir ? (joined === '/' ? '/' : joined + '/') : joined;
    step.sources = sources;
    step.dest = dest;
    for (const f of ['chown', 'chmod'] as const) {
      const v = flagValue(ins, f);
      if (v !== undefined) step[f] = w(v);
    }
    if (step.chmod !== undefined && !/^[0-7]{3,4}$/.test(step.chmod)) {
      throw new UserError(`${ins.keyword} --chmod=${step.chmod} is not an octal mode: write e.g. --chmod=0644`, where(ins));
    }
    if (flagValue(ins, 'link') !== undefined) step.link = flagValue(ins, 'link') !== 'false';
    const checksum = flagValue(ins, 'checksum');
    if (checksum !== undefined) step.checksum = w(checksum);
    const fromRaw = ins.keyword === 'COPY' ? flagValue(ins, 'from') : undefined;
    let from: Step['from'];
    if (fromRaw !== undefined) {
      const f = w(fromRaw);
      const idx = stageRefIndex(stages, f, stages.find((x) => x.body.includes(ins)) as RawStage, ins);
      from = idx !== undefined ? { stage: idx } : { image: f };
      step.from = from;
    }
    const resources: Resource[] = [];
    const heredocByName = new Map(ins.heredocs.map((h) => [h.name, h]));
    for (const src of sources) {
      const hm = /^<<-?["']?([A-Za-z0-9_.-]+)["']?$/.exec(src);
      if (hm && heredocByName.has(hm[1] as string)) {
        const h = heredocByName.get(hm[1] as string)!;
        const content = h.expand ? expandHeredoc(h.content, s.lookup) : h.content;
        resources.push({ source: src, kind: 'heredoc', path: h.name, sha256: sha256(content), size: Buffer.byteLength(content) });
        continue;
      }
      const expandedSrc = ins.heredocs.length > 0 ? w(src) : src;
      if (from) {
        resources.push('stage' in from ? { source: expandedSrc, kind: 'stage', stage: from.stage, path: expandedSrc } : { source: expandedSrc, kind: 'image', image: from.image, path: expandedSrc });
      } else if (/^https?:\/\//i.test(expandedSrc)) {
        if (ins.keyword === 'COPY') throw new UserError(`COPY cannot fetch URLs (${expandedSrc}): use ADD for a URL`, where(ins));
        const d = await (opts.downloads ? opts.downloads.get(expandedSrc) : httpDigest(expandedSrc, downloadLimits(), dockerfileUrlGuard(opts.allowHostUrls))).catch((err: unknown) => {
          if (err instanceof UserError) throw new UserError(`ADD ${expandedSrc}: ${err.message}`, where(ins));
          throw err;
        });
        if (step.checksum && step.checksum !== `sha256:${d.sha256}`) {
          throw new UserError(`ADD ${expandedSrc}: checksum mismatch, got sha256:${d.sha256}, --checksum says ${step.checksum}`, where(ins));
        }
        resources.push({ source: expandedSrc, kind: 'url', url: expandedSrc, sha256: d.sha256, size: d.size });
      } else {
        const got = await opts.context.resolve(expandedSrc, { ...where(ins), keyword: ins.keyword }, opts.downloads, opts.allowHostUrls);
        for (const r of got) {
          if (ins.keyword === 'ADD' && r.kind === 'file' && r.path && opts.context.kind === 'local') {
            if (await isArchive(path.join(opts.context.root, r.path))) r.extract = true;
          }
          resources.push(r);
        }
      }
    }
    const many = sources.length > 1 || resources.filter((r) => r.kind !== 'stage' && r.kind !== 'image').length > sources.length || sources.some((x) => /[*?[]/.test(x));
    if (many && !step.dest.endsWith('/')) {
      throw new UserError(`${ins.keyword} with more than one source needs a directory destination ending in /: write ${destRaw}/`, where(ins));
    }
    step.resources = resources;
  }

  function nameVal(ins: ParsedInstruction): { key: string; value: string }[] {
    try {
      return parseNameVal(ins.rest, escape, ins.keyword);
    } catch (err) {
      throw new UserError((err as Error).message, where(ins));
    }
  }

  const targetStage = planned.find((p) => p.index === target.index) as Stage;
  for (const name of Object.keys(buildArgs)) if (PREDEFINED_ARGS.includes(name)) usedArgs.add(name);
  const planWithoutDigest = {
    schemaVersion: PLAN_SCHEMA_VERSION,
    source: opts.source,
    directives: df.syntax ? { escape, syntax: df.syntax } : { escape },
    buildArgs,
    unusedBuildArgs: Object.keys(buildArgs).filter((k) => !usedArgs.has(k)).sort(),
    globalArgs: [...globalArgs].map(([name, value]) => ({ name, value })),
    target: targetStage.name ? { index: targetStage.index, name: targetStage.name } : { index: targetStage.index },
    stages: planned,
    skipped: stages.filter((s) => !needed.has(s.index)).map((s) => (s.name ? { index: s.index, name: s.name } : { index: s.index })),
  };
  // The digest identifies what will be built: not where the Dockerfile came from or lives on this host.
  const { source: _source, ...built } = planWithoutDigest;
  const digestInput = { ...built, stages: planned.map((st) => ({ ...st, file: undefined, steps: st.steps.map((x) => ({ ...x, file: undefined })) })) };
  const plan = { ...planWithoutDigest, digest: sha256(canonicalJson(digestInput)) };
  return PlanSchema.parse(plan);
}

/** A stage index for a `--from`/`from=` value, undefined for an image reference; errors for unknown stages. */
function stageRefIndex(stages: RawStage[], ref: string, current: RawStage, ins: ParsedInstruction): number | undefined {
  if (/^\d+$/.test(ref)) {
    const i = Number(ref);
    if (i >= current.index) {
      throw new UserError(`${ins.keyword} refers to stage ${i}, which is ${i === current.index ? 'this stage itself' : 'a later stage'}: refer to an earlier stage`, where(ins));
    }
    return i;
  }
  const st = stages.find((s) => s.name === ref.toLowerCase());
  if (st) {
    if (st.index >= current.index) {
      throw new UserError(`${ins.keyword} refers to stage '${st.name}', which is ${st.index === current.index ? 'this stage itself' : `defined later (line ${st.from.line})`}: a stage can only use earlier stages`, where(ins));
    }
    return st.index;
  }
  // A bare word that names no stage is almost always a typo; images need a tag, digest, or registry path.
  if (/^[a-z0-9][a-z0-9_.-]*$/i.test(ref) && !ref.includes('.')) {
    const names = stages.filter((s) => s.name && s.index < current.index).map((s) => s.name);
    throw new UserError(`${ins.keyword} refers to unknown stage '${ref}'${names.length ? ` (stages: ${names.join(', ')})` : ''}: name an earlier stage, or an image as name:tag`, where(ins));
  }
  return undefined;
}

function parseArgInstruction(ins: ParsedInstruction, escape: string): { name: string; value: string | null }[] {
  const words = parseWords(ins.rest, escape);
  if (words.length === 0) throw new UserError('ARG needs a name: ARG NAME[=default]', where(ins));
  return words.map((wd) => {
    const i = wd.indexOf('=');
    const name = i < 0 ? wd : wd.slice(0, i);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UserError(`invalid ARG name '${name}': use letters, digits and _`, where(ins));
    return { name, value: i < 0 ? null : wd.slice(i + 1) };
  });
}

/** `80`, `80/udp`, `9000-9002/tcp` as Docker records them: one entry a port, protocol lower-case. */
function normalizePorts(p: string, ins: ParsedInstruction): string[] {
  const m = /^(\d{1,5})(?:-(\d{1,5}))?(?:\/(tcp|udp|sctp))?$/i.exec(p);
  const ok = (n: string | undefined): boolean => n === undefined || (Number(n) >= 1 && Number(n) <= 65535);
  if (!m || !ok(m[1]) || !ok(m[2]) || (m[2] !== undefined && Number(m[2]) < Number(m[1]))) {
    throw new UserError(`EXPOSE ${p} is not a port: write PORT[/tcp|udp] or FROM-TO[/proto]`, where(ins));
  }
  const proto = (m[3] ?? 'tcp').toLowerCase();
  const from = Number(m[1]);
  const to = m[2] === undefined ? from : Number(m[2]);
  return Array.from({ length: to - from + 1 }, (_, i) => `${from + i}/${proto}`);
}

const SIGNALS = ['ABRT', 'ALRM', 'BUS', 'CHLD', 'CLD', 'CONT', 'FPE', 'HUP', 'ILL', 'INT', 'IO', 'IOT', 'KILL', 'PIPE', 'POLL', 'PROF', 'PWR', 'QUIT', 'SEGV', 'STKFLT', 'STOP', 'SYS', 'TERM', 'TRAP', 'TSTP', 'TTIN', 'TTOU', 'URG', 'USR1', 'USR2', 'VTALRM', 'WINCH', 'XCPU', 'XFSZ'];

function normalizeSignal(s: string, ins: ParsedInstruction): string {
  const t = s.trim();
  if (/^\d+$/.test(t) && Number(t) >= 1 && Number(t) <= 64) return t;
  const name = t.toUpperCase().replace(/^SIG/, '');
  if (SIGNALS.includes(name) || /^RTMIN(\+\d+)?$|^RTMAX(-\d+)?$/.test(name)) return `SIG${name}`;
  throw new UserError(`STOPSIGNAL ${s} is not a signal: write e.g. SIGTERM, SIGQUIT or a number`, where(ins));
}

/** Go duration strings (`30s`, `1m30s`, `500ms`) in nanoseconds. */
export function parseDuration(s: string): number | undefined {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  const units: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
  let total = 0;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    if (m.index !== consumed) return undefined;
    total += Number(m[1]) * (units[m[2] as string] as number);
    consumed += m[0].length;
  }
  return consumed === s.length && consumed > 0 ? Math.round(total) : undefined;
}

function parseHealthcheck(ins: ParsedInstruction, shell: string[]): NonNullable<ImageConfig['healthcheck']> {
  const rest = ins.rest.trim();
  if (/^none$/i.test(rest)) {
    if (ins.flags.length) throw new UserError('HEALTHCHECK NONE takes no flags', where(ins));
    return { test: ['NONE'] };
  }
  const m = /^cmd\s+([\s\S]+)$/i.exec(rest);
  if (!m) throw new UserError('HEALTHCHECK takes NONE or [flags] CMD command', where(ins));
  const cmd = (m[1] as string).trim();
  let test: string[];
  if (/^\[\s*"/.test(cmd)) {
    try {
      const arr = JSON.parse(cmd) as unknown;
      if (!Array.isArray(arr) || !arr.every((x) => typeof x === 'string')) throw new Error('not an array of strings');
      test = ['CMD', ...(arr as string[])];
    } catch (err) {
      throw new UserError(`HEALTHCHECK CMD is not valid JSON (${(err as Error).message})`, where(ins));
    }
  } else test = ['CMD-SHELL', cmd];
  void shell;
  const hc: NonNullable<ImageConfig['healthcheck']> = { test };
  const dur = (flag: string, key: 'intervalNs' | 'timeoutNs' | 'startPeriodNs'): void => {
    const v = flagValue(ins, flag);
    if (v === undefined) return;
    const ns = parseDuration(v);
    if (ns === undefined) throw new UserError(`HEALTHCHECK --${flag}=${v} is not a duration: write e.g. 30s or 1m30s`, where(ins));
    hc[key] = ns;
  };
  dur('interval', 'intervalNs');
  dur('timeout', 'timeoutNs');
  dur('start-period', 'startPeriodNs');
  const retries = flagValue(ins, 'retries');
  if (retries !== undefined) {
    if (!/^\d+$/.test(retries)) throw new UserError(`HEALTHCHECK --retries=${retries} is not a number`, where(ins));
    hc.retries = Number(retries);
  }
  return hc;
}

function parseMount(spec: string, ins: ParsedInstruction): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of spec.split(',')) {
    if (part === '') continue;
    const i = part.indexOf('=');
    out[i < 0 ? part : part.slice(0, i)] = i < 0 ? 'true' : part.slice(i + 1);
  }
  if (!out.type) out.type = 'bind';
  if (!['bind', 'cache', 'tmpfs', 'secret', 'ssh'].includes(out.type)) throw new UserError(`RUN --mount type=${out.type} is not a mount type: use bind, cache, tmpfs, secret or ssh`, where(ins));
  return out;
}

/** Heredoc bodies with an unquoted delimiter expand variables, line by line (quotes are literal). */
function expandHeredoc(content: string, lookup: Lookup): string {
  return content.replace(/\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (m, braced: string | undefined, bare: string | undefined) => {
    if (bare) return lookup(bare) ?? '';
    try {
      return processWord(m.replace(/"/g, '\\"'), lookup);
    } catch {
      return m;
    }
  });
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

/** JSON with sorted keys: a stable digest input. */
export function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    val && typeof val === 'object' && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : val,
  );
}
