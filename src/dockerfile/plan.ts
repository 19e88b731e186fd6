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
import { chompHeredocContent, flagBool, flagValue, flagValues, parseDockerfile, parseHeredoc, type ParsedDockerfile, type ParsedInstruction } from './parse.js';
import { PLAN_SCHEMA_VERSION, PlanSchema, type Plan, type Resource, type Stage, type Step } from './plan-schema.js';
import { ExpansionError, processWord, processWords, type Lookup } from './shell-lex.js';

export interface PlanOptions {
  buildArgs?: Record<string, string>;
  /** `--target` (`--dockerfile-stage`): a stage name or index; the last stage when absent. */
  target?: string;
  /**
   * The platform the image is built for (`os/arch[/variant]`, e.g. linux/arm64): the value of
   * TARGETPLATFORM, TARGETOS, TARGETARCH and TARGETVARIANT. Default: the host's, which is also BUILDPLATFORM.
   */
  platform?: string;
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
/** Build args BuildKit never puts into a stage's environment. */
const NON_ENV_ARGS = ['BUILDKIT_SBOM_SCAN_CONTEXT', 'BUILDKIT_SBOM_SCAN_STAGE'];
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
      const words = ins.args;
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
  /** The image config's environment: the base's, then ENV. */
  env = new Map<string, string>();
  /**
   * What expansion and RUN see (BuildKit's state environment): the base's environment, then ENV and ARG
   * values as they come, the last assignment of a name winning; ordered by last assignment.
   */
  scope = new Map<string, string>();
  config: ImageConfig;
  cmdSetHere = false;

  constructor(base: ImageConfig | undefined, inherited?: Map<string, string>) {
    this.config = structuredClone(base ?? ImageConfigSchema.parse({}));
    for (const kv of this.config.env) {
      const i = kv.indexOf('=');
      if (i > 0) this.env.set(kv.slice(0, i), kv.slice(i + 1));
    }
    // A stage built FROM a stage continues that stage's environment, ARG values included; then the
    // image config's environment is applied over it (BuildKit's order: a base's ENV beats its later ARG).
    this.scope = new Map(inherited ?? []);
    for (const [k, v] of this.env) this.assign(k, v);
    // ONBUILD triggers of the base run in this stage; this image starts with none of its own.
    this.config.onBuild = [];
  }

  /** Unset names expand to empty. */
  lookup: Lookup = (name) => this.scope.get(name);

  assign(name: string, value: string): void {
    this.scope.delete(name);
    this.scope.set(name, value);
  }

  runEnv(): string[] {
    return [...this.scope].map(([k, v]) => `${k}=${v}`);
  }

  syncEnv(): void {
    this.config.env = [...this.env].map(([k, v]) => `${k}=${v}`);
  }
}

/** The platform of this host as BuildKit names it (linux/amd64, linux/arm64, ...). */
export function hostPlatform(): string {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm/v7', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64', loong64: 'loong64', mips64el: 'mips64le' };
  return `linux/${arch[process.arch] ?? process.arch}`;
}

interface Platform {
  os: string;
  arch: string;
  variant: string;
}

/** `os/arch[/variant]` with containerd's normalisation of the common aliases (x86_64, aarch64, armhf, arm64/v8). */
function parsePlatform(s: string): Platform {
  const parts = s.toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/.test(p))) {
    throw new UserError(`malformed platform '${s}': write os/arch[/variant], e.g. linux/arm64`);
  }
  let [os, arch, variant = ''] = parts as [string, string, string?];
  if (os === 'macos') os = 'darwin';
  if (arch === 'x86_64' || arch === 'x86-64') arch = 'amd64';
  else if (arch === 'i386') arch = '386';
  else if (arch === 'aarch64' || (arch === 'arm64' && (variant === 'v8' || variant === '8'))) {
    arch = 'arm64';
    if (variant === 'v8' || variant === '8') variant = '';
  } else if (arch === 'armhf' || arch === 'armel' || arch === 'arm') {
    variant = arch === 'armhf' ? 'v7' : arch === 'armel' ? 'v6' : variant === '' ? 'v7' : variant.replace(/^(\d)$/, 'v$1');
    arch = 'arm';
  }
  return { os, arch, variant };
}

const formatPlatform = (p: Platform): string => `${p.os}/${p.arch}${p.variant ? `/${p.variant}` : ''}`;

/** BuildKit's automatic platform args and TARGETSTAGE, in the global scope (build args override them). */
function platformArgs(target: string | undefined, targetStage: string): Map<string, string> {
  const b = parsePlatform(hostPlatform());
  const t = parsePlatform(target ?? hostPlatform());
  return new Map([
    ['BUILDPLATFORM', formatPlatform(b)],
    ['BUILDOS', b.os],
    ['BUILDOSVERSION', ''],
    ['BUILDARCH', b.arch],
    ['BUILDVARIANT', b.variant],
    ['TARGETPLATFORM', formatPlatform(t)],
    ['TARGETOS', t.os],
    ['TARGETOSVERSION', ''],
    ['TARGETARCH', t.arch],
    ['TARGETVARIANT', t.variant],
    ['TARGETSTAGE', targetStage],
  ]);
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

  const { globals, stages } = splitStages(df);
  let target: RawStage;
  if (opts.target !== undefined) {
    const t = findStage(stages, opts.target);
    if (!t) {
      const names = stages.map((s) => s.name ?? String(s.index)).join(', ');
      throw new UserError(`--target ${opts.target} is not a stage of ${df.file}: choose one of ${names}`);
    }
    target = t;
  } else target = stages[stages.length - 1] as RawStage;

  // BuildKit's automatic args (platforms, TARGETSTAGE) start the global scope; build args override them.
  const automatic = platformArgs(opts.platform, opts.target !== undefined && !/^\d+$/.test(opts.target) ? opts.target : (target.name ?? 'default'));
  for (const name of automatic.keys()) {
    if (Object.prototype.hasOwnProperty.call(buildArgs, name)) {
      automatic.set(name, buildArgs[name] as string);
      usedArgs.add(name);
    }
  }
  // Global ARGs: visible to FROM lines, and to stages that redeclare them.
  const globalArgs = new Map<string, string | null>();
  const globalLookup: Lookup = (n) => globalArgs.get(n) ?? automatic.get(n);
  for (const ins of globals) {
    for (const a of parseArgInstruction(ins)) {
      let value: string | null;
      if (Object.prototype.hasOwnProperty.call(buildArgs, a.name)) {
        value = buildArgs[a.name] as string;
        usedArgs.add(a.name);
      } else value = a.value === null ? null : expandWord(a.value, globalLookup, ins);
      // A global ARG without a value leaves an automatic arg of that name as it is.
      if (value !== null || !globalArgs.has(a.name)) globalArgs.set(a.name, value);
    }
  }

  // Resolve each FROM now: the stage graph needs the base of every stage.
  const bases = stages.map((st) => {
    const ins = st.from;
    const ref = expandWord(ins.args[0] as string, globalLookup, ins);
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

  const needed = new Set<number>();
  const visit = (st: RawStage): void => {
    if (needed.has(st.index)) return;
    needed.add(st.index);
    for (const d of deps(st)) visit(stages[d] as RawStage);
  };
  visit(target);

  const planned: Stage[] = [];
  const stageConfigs = new Map<number, ImageConfig>();
  const stageScopes = new Map<number, Map<string, string>>();
  for (const st of stages) {
    if (!needed.has(st.index)) continue;
    const { base, platform } = bases[st.index] as { base: Stage['base']; platform: string | undefined };
    let baseCfg: ImageConfig | undefined;
    if (base.kind === 'stage') baseCfg = stageConfigs.get(base.stage);
    else if (base.kind === 'image' && opts.baseConfig) {
      const c = await opts.baseConfig(base.ref);
      baseCfg = c ? ImageConfigSchema.parse(c) : undefined;
    }
    // Docker gives an image without PATH its default PATH (scratch, or a known base config that lacks it), last.
    if (base.kind === 'scratch' || (baseCfg && !baseCfg.env.some((e) => e.startsWith('PATH=')))) {
      baseCfg = { ...(baseCfg ?? ImageConfigSchema.parse({})), env: [...(baseCfg?.env ?? []), DEFAULT_PATH] };
    }
    const state = new StageState(baseCfg, base.kind === 'stage' ? stageScopes.get(base.stage) : undefined);
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
    stageScopes.set(st.index, state.scope);
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
          for (const a of parseArgInstruction(ins)) {
            let value: string | null;
            if (Object.prototype.hasOwnProperty.call(buildArgs, a.name)) {
              value = buildArgs[a.name] as string;
              usedArgs.add(a.name);
            } else if (a.value !== null) value = w(a.value);
            // Without a default: the global value (a global ARG's, or an automatic arg's), if any.
            else value = globalLookup(a.name) ?? null;
            if (value !== null && !NON_ENV_ARGS.includes(a.name)) s.assign(a.name, value);
            step.args.push({ name: a.name, value });
          }
          break;
        }
        case 'ENV': {
          const pairs = nameVal(ins).map((p) => ({ key: w(p.key), value: w(p.value) }));
          // All pairs of one ENV see the environment from before it (Docker's rule).
          for (const p of pairs) {
            s.env.set(p.key, p.value);
            s.assign(p.key, p.value);
          }
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
          step.value = oneArg(ins);
          break;
        case 'EXPOSE': {
          if (ins.args.length === 0) throw new UserError('EXPOSE needs at least one port, e.g. EXPOSE 8080/tcp', where(ins));
          step.values = ins.args.flatMap((a) => ws(a)).flatMap((p) => normalizePorts(p, ins));
          for (const p of step.values) if (!cfg.exposedPorts.includes(p)) cfg.exposedPorts.push(p);
          break;
        }
        case 'VOLUME': {
          // Each path is one word (the shell form splits on blanks before expansion, as BuildKit's).
          const paths = ins.args.map((v) => v.trim());
          if (paths.length === 0 || paths.some((v) => v === '')) throw new UserError('VOLUME needs a non-empty path', where(ins));
          step.values = paths.map(w);
          if (step.values.some((v) => v === '')) throw new UserError('VOLUME path expands to an empty string: set the variable it names', where(ins));
          for (const v of step.values) if (!cfg.volumes.includes(v)) cfg.volumes.push(v);
          break;
        }
        case 'USER': {
          const u = w(oneArg(ins));
          if (u === '' || /\s/.test(u.trim())) throw new UserError('USER takes one user[:group], by name or number', where(ins));
          step.value = u;
          cfg.user = u;
          break;
        }
        case 'WORKDIR': {
          const d = w(oneArg(ins));
          if (d === '') throw new UserError('WORKDIR needs a path', where(ins));
          const abs = path.posix.resolve(cfg.workingDir || '/', d);
          step.value = abs;
          cfg.workingDir = abs;
          break;
        }
        case 'STOPSIGNAL': {
          // Kept as written (after expansion), as BuildKit keeps it; it must name a signal.
          step.value = checkSignal(w(oneArg(ins)), ins);
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
          // The shell form is the shell and the argument text (empty when there is none), as BuildKit's.
          step.command = ins.json ?? [...shell, ins.args.join(' ')];
          if (ins.keyword === 'CMD') {
            cfg.cmd = step.command;
            s.cmdSetHere = true;
          } else {
            // `ENTRYPOINT []` clears the entrypoint.
            cfg.entrypoint = step.command.length ? step.command : null;
            // ENTRYPOINT resets a CMD inherited from the base.
            if (!s.cmdSetHere) cfg.cmd = null;
          }
          break;
        }
        case 'HEALTHCHECK': {
          step.healthcheck = parseHealthcheck(ins);
          cfg.healthcheck = step.healthcheck;
          break;
        }
        case 'ONBUILD': {
          const kw = ins.args[0]?.trim().toUpperCase() ?? '';
          if (kw === '') throw new UserError('ONBUILD needs an instruction, e.g. ONBUILD RUN make', where(ins));
          if (kw === 'ONBUILD' || kw === 'FROM' || kw === 'MAINTAINER') throw new UserError(`ONBUILD ${kw} is not allowed`, where(ins));
          // The trigger as BuildKit stores it: the logical line without ONBUILD, then any heredoc bodies.
          let trigger = ins.node.original.replace(/^\s*ONBUILD\s*/i, '');
          for (const h of ins.node.heredocs) trigger += `\n${h.content}${h.name}`;
          // Validate the trigger's own syntax now rather than in the image that inherits it.
          parseDockerfile(`FROM scratch\n${trigger}\n`, ins.file);
          step.value = trigger;
          cfg.onBuild.push(trigger);
          break;
        }
        case 'RUN': {
          const shell = cfg.shell ?? DEFAULT_SHELL;
          if (ins.json && ins.json.length === 0) throw new UserError('RUN [] has no command: write RUN ["cmd", "arg"] or RUN cmd', where(ins));
          step.form = ins.json ? 'exec' : 'shell';
          step.command = ins.json ?? [...shell, ins.args.join(' ')];
          if (ins.heredocs.length > 0) step.heredocs = ins.heredocs;
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
    // BuildKit's rules: the shell form splits on blanks; a source that reads as a heredoc opener is one
    // (its body looked up by name), every other source and the destination are expanded one word each.
    const args = ins.json ?? ins.args;
    if (args.length < 2) throw new UserError(`${ins.keyword} needs at least one source and a destination: ${ins.keyword} <src>... <dest>`, where(ins));
    if (heredocOf(args[args.length - 1] as string)) throw new UserError(`${ins.keyword} cannot take a heredoc as its destination: write ${ins.keyword} <<EOF /path`, where(ins));
    const destRaw = w(args[args.length - 1] as string);
    const sources = args.slice(0, -1).map((src) => (heredocOf(src) ? src : w(src)));
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
    const link = flagBool(ins, 'link');
    if (link !== undefined) step.link = link;
    const checksum = flagValue(ins, 'checksum');
    if (checksum !== undefined) step.checksum = w(checksum);
    // --parents (COPY only) and --exclude (COPY and ADD, repeatable): BuildKit's, GA in dockerfile 1.20 and 1.19.
    const parents = ins.keyword === 'COPY' ? flagBool(ins, 'parents') : undefined;
    if (parents) step.parents = true;
    const exclude = flagValues(ins, 'exclude').map((x) => w(x));
    if (exclude.length) {
      if (exclude.some((x) => x.trim() === '')) throw new UserError(`${ins.keyword} --exclude= is empty: give a pattern, e.g. --exclude=*.md`, where(ins));
      step.exclude = exclude;
    }
    if (step.checksum !== undefined) checkChecksum(ins, step.checksum, sources);
    // ADD unpacks local archives unless --unpack=false, and URLs only with --unpack=true.
    const unpack = ins.keyword === 'ADD' ? flagBool(ins, 'unpack') : false;
    const fromRaw = ins.keyword === 'COPY' ? flagValue(ins, 'from') : undefined;
    let from: Step['from'];
    if (fromRaw !== undefined) {
      // BuildKit refuses variables (and quotes) in --from: it names a stage or an image as written.
      let f: string;
      try {
        f = processWord(fromRaw, () => undefined, { escape });
      } catch {
        f = '';
      }
      if (f !== fromRaw) throw new UserError(`COPY --from=${fromRaw}: variables are not expanded in --from; name the stage or image, or make a stage FROM the image with a global ARG`, where(ins));
      const idx = stageRefIndex(stages, f, stages.find((x) => x.body.includes(ins)) as RawStage, ins);
      from = idx !== undefined ? { stage: idx } : { image: f };
      step.from = from;
    }
    const resources: Resource[] = [];
    const docs: NonNullable<Step['heredocs']> = [];
    const isUrl = (x: string): boolean => /^https?:\/\//i.test(x);
    for (const src of sources) {
      const h = heredocOf(src);
      if (h) {
        // The body of the heredoc of that name (none: empty), tabs stripped for <<-, expanded unless quoted.
        const body = [...ins.node.heredocs].reverse().find((x) => x.name === h.name)?.content ?? '';
        const chomped = h.chomp ? chompHeredocContent(body) : body;
        let content = chomped;
        if (h.expand) {
          try {
            content = processWord(chomped, s.lookup, { escape: '\\', skipProcessQuotes: true });
          } catch (err) {
            if (err instanceof ExpansionError) throw new UserError(`${ins.keyword} <<${h.name}: ${err.message}`, { ...where(ins), cause: err });
            throw err;
          }
        }
        docs.push({ name: h.name, content, expand: h.expand, chomp: h.chomp });
        resources.push({ source: src, kind: 'heredoc', path: h.name, sha256: sha256(content), size: Buffer.byteLength(content) });
        continue;
      }
      if (from) {
        resources.push('stage' in from ? { source: src, kind: 'stage', stage: from.stage, path: src } : { source: src, kind: 'image', image: from.image, path: src });
      } else if (isUrl(src)) {
        if (ins.keyword === 'COPY') throw new UserError(`COPY cannot fetch URLs (${src}): use ADD for a URL`, where(ins));
        const d = await (opts.downloads ? opts.downloads.get(src) : httpDigest(src, downloadLimits(), dockerfileUrlGuard(opts.allowHostUrls))).catch((err: unknown) => {
          if (err instanceof UserError) throw new UserError(`ADD ${src}: ${err.message}`, where(ins));
          throw err;
        });
        if (step.checksum && step.checksum !== `sha256:${d.sha256}`) {
          throw new UserError(`ADD ${src}: checksum mismatch: expected ${step.checksum} (--checksum), got sha256:${d.sha256}; nothing was added`, where(ins));
        }
        resources.push({ source: src, kind: 'url', url: src, sha256: d.sha256, size: d.size, ...(unpack === true ? { extract: true } : {}) });
      } else {
        const at = { ...where(ins), keyword: ins.keyword };
        if (step.parents && !opts.context.resolveParents) throw new UserError(`COPY --parents ${src}: this build context cannot list its files`, where(ins));
        const got = step.parents
          ? await opts.context.resolveParents!(src, at, opts.downloads, opts.allowHostUrls)
          : await opts.context.resolve(src, at, opts.downloads, opts.allowHostUrls);
        for (const r of got) {
          if (ins.keyword === 'ADD' && unpack !== false && r.kind === 'file' && r.path && opts.context.kind === 'local') {
            if (await isArchive(path.join(opts.context.root, r.path))) r.extract = true;
          } else if (ins.keyword === 'ADD' && unpack === false && r.kind === 'file') {
            // --unpack=false: the engines copy it as it is, whatever it holds.
            r.extract = false;
          }
          resources.push(r);
        }
      }
    }
    if (docs.length) step.heredocs = docs;
    // A URL's ? and * are part of the URL, not wildcards.
    const wildcard = sources.some((x) => !isUrl(x) && !heredocOf(x) && /[*?[]/.test(x));
    const many = sources.length > 1 || resources.filter((r) => r.kind !== 'stage' && r.kind !== 'image').length > sources.length || wildcard;
    if (many && !step.dest.endsWith('/')) {
      throw new UserError(`${ins.keyword} with more than one source needs a directory destination ending in /: write ${destRaw}/`, where(ins));
    }
    step.resources = resources;
  }

  function nameVal(ins: ParsedInstruction): { key: string; value: string }[] {
    const out: { key: string; value: string }[] = [];
    for (let i = 0; i < ins.args.length; i += 3) out.push({ key: ins.args[i] as string, value: ins.args[i + 1] as string });
    if (out.length === 0) throw new UserError(`${ins.keyword} needs at least one key=value pair`, where(ins));
    if (out.some((p) => p.key === '')) throw new UserError(`${ins.keyword} names can not be blank`, where(ins));
    return out;
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

/**
 * ADD --checksum as BuildKit takes it (dockerfile2llb dispatchCopy): one source, an http(s) URL (BuildKit
 * also takes a Git source, which firebuild's ADD does not fetch), and a `sha256:` digest (the only
 * algorithm BuildKit verifies a download with). The download is checked against it when planned, before
 * any step runs.
 */
function checkChecksum(ins: ParsedInstruction, checksum: string, sources: string[]): void {
  if (sources.length !== 1) throw new UserError(`ADD --checksum takes one source, not ${sources.length}: give each URL its own ADD (BuildKit: checksum can't be specified for multiple sources)`, where(ins));
  const src = sources[0] as string;
  if (!/^https?:\/\//i.test(src)) {
    throw new UserError(`ADD --checksum needs an http(s) URL source, and ${heredocOf(src) ? 'a heredoc' : src} is not one (BuildKit: checksum requires HTTP(S) or Git sources): remove --checksum, or ADD the file by its URL`, where(ins));
  }
  if (!/^sha256:[a-f0-9]{64}$/.test(checksum)) throw new UserError(`ADD --checksum=${checksum} is not a sha256 digest: write --checksum=sha256:<64 lower-case hex digits>`, where(ins));
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

function parseArgInstruction(ins: ParsedInstruction): { name: string; value: string | null }[] {
  if (ins.args.length === 0) throw new UserError('ARG needs a name: ARG NAME[=default]', where(ins));
  return ins.args.map((wd) => {
    const i = wd.indexOf('=');
    const name = i < 0 ? wd : wd.slice(0, i);
    if (name === '') throw new UserError('ARG names can not be blank: write ARG NAME[=default]', where(ins));
    return { name, value: i < 0 ? null : wd.slice(i + 1) };
  });
}

/** The one argument of USER, WORKDIR, STOPSIGNAL, MAINTAINER (the whole argument text). */
function oneArg(ins: ParsedInstruction): string {
  if (ins.args.length !== 1) throw new UserError(`${ins.keyword} requires exactly one argument: write ${ins.keyword} <value>`, where(ins));
  return ins.args[0] as string;
}

/** A COPY/ADD source or destination that reads as a heredoc opener (BuildKit's MustParseHeredoc). */
function heredocOf(word: string): ReturnType<typeof parseHeredoc> {
  try {
    return parseHeredoc(word);
  } catch {
    return undefined;
  }
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

/**
 * A STOPSIGNAL value as Docker checks it (moby/sys/signal ParseSignal): a non-zero number, or a Linux
 * signal name with or without SIG, in any case (RTMIN+n up to 15, RTMAX-n up to 14). Returned as written.
 */
function checkSignal(s: string, ins: ParsedInstruction): string {
  if (/^[+-]?\d+$/.test(s)) {
    const n = Number(s);
    if (n !== 0 && Number.isSafeInteger(n)) return s;
  } else {
    const name = s.toUpperCase().replace(/^SIG/, '');
    const rt = /^RTMIN\+(\d+)$/.exec(name) ?? /^RTMAX-(\d+)$/.exec(name);
    if (SIGNALS.includes(name) || name === 'RTMIN' || name === 'RTMAX' || (rt && /^[1-9]\d?$/.test(rt[1] as string) && Number(rt[1]) <= (name.startsWith('RTMIN') ? 15 : 14))) return s;
  }
  throw new UserError(`STOPSIGNAL ${s} is not a signal: write e.g. SIGTERM, SIGQUIT or a number`, where(ins));
}

const DURATION_UNITS: Record<string, number> = { ns: 1, us: 1e3, 'µs': 1e3, 'μs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** Go's time.ParseDuration (`30s`, `1m30s`, `1.5h`, `500ms`, `-1s`, `0`) in nanoseconds; undefined when malformed. */
export function parseDuration(s: string): number | undefined {
  let rest = s;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest.startsWith('-')) sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') return undefined;
  let total = 0;
  while (rest !== '') {
    const m = /^(\d*)(?:\.(\d*))?([^\d.]+)/.exec(rest);
    if (!m || (m[1] === '' && (m[2] ?? '') === '')) return undefined;
    const unit = DURATION_UNITS[m[3] as string];
    if (unit === undefined) return undefined;
    total += Number(`${m[1] || '0'}.${m[2] ?? ''}0`) * unit;
    rest = rest.slice(m[0].length);
  }
  if (total > 2 ** 63 - 1) return undefined;
  return sign * Math.round(total);
}

/** HEALTHCHECK as BuildKit reads it: NONE, or [flags] CMD command (shell or JSON form). */
function parseHealthcheck(ins: ParsedInstruction): NonNullable<ImageConfig['healthcheck']> {
  if (ins.args.length === 0) throw new UserError('HEALTHCHECK takes NONE or [flags] CMD command', where(ins));
  const type = (ins.args[0] as string).toUpperCase();
  const args = ins.args.slice(1);
  if (type === 'NONE') {
    if (args.length) throw new UserError('HEALTHCHECK NONE takes no arguments', where(ins));
    return { test: ['NONE'] };
  }
  if (type !== 'CMD') throw new UserError(`HEALTHCHECK takes NONE or [flags] CMD command, not ${ins.args[0]}`, where(ins));
  if (args.length === 0) throw new UserError('HEALTHCHECK CMD needs a command', where(ins));
  const hc: NonNullable<ImageConfig['healthcheck']> = { test: ins.json ? ['CMD', ...ins.json] : ['CMD-SHELL', args.join(' ')] };
  const dur = (flag: string, key: 'intervalNs' | 'timeoutNs' | 'startPeriodNs' | 'startIntervalNs'): void => {
    const v = flagValue(ins, flag);
    if (v === undefined || v === '') return;
    const ns = parseDuration(v);
    if (ns === undefined) throw new UserError(`HEALTHCHECK --${flag}=${v} is not a duration: write e.g. 30s or 1m30s`, where(ins));
    // 0 means the default; anything else must be at least 1ms (BuildKit's rule).
    if (ns !== 0 && ns < 1e6) throw new UserError(`HEALTHCHECK --${flag}=${v} is less than 1ms: give at least 1ms, or 0 for the default`, where(ins));
    hc[key] = ns;
  };
  dur('interval', 'intervalNs');
  dur('timeout', 'timeoutNs');
  dur('start-period', 'startPeriodNs');
  dur('start-interval', 'startIntervalNs');
  const retries = flagValue(ins, 'retries');
  if (retries !== undefined && retries !== '') {
    if (!/^[+-]?\d+$/.test(retries) || Math.abs(Number(retries)) > 2 ** 31 - 1) throw new UserError(`HEALTHCHECK --retries=${retries} is not a number`, where(ins));
    if (Number(retries) < 0) throw new UserError(`HEALTHCHECK --retries=${retries} is negative: give 0 or more`, where(ins));
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
