/**
 * The Logger interface the core takes. The CLI passes a terminal or JSON logger, the actions one backed
 * by @actions/core. Nothing in the core writes to stdout/stderr directly.
 */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type Fields = Record<string, unknown>;

export interface Progress {
  /** Report progress; `total` may be unknown. */
  update(done: number, total?: number): void;
  /** Finish the step; the message is logged at info. */
  done(message?: string): void;
}

export interface Logger {
  trace(message: string, fields?: Fields): void;
  debug(message: string, fields?: Fields): void;
  info(message: string, fields?: Fields): void;
  warn(message: string, fields?: Fields): void;
  error(message: string, fields?: Fields): void;
  /** A logger for a sub-module; JSON output carries it as `@module`. */
  child(module: string): Logger;
  /** Progress for a long step (a spinner/percentage on a terminal, start/end lines elsewhere). */
  progress(label: string): Progress;
}

export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

const rank = (l: LogLevel): number => LOG_LEVELS.indexOf(l);

export interface Sink {
  write(s: string): void;
  isTTY?: boolean;
}

abstract class BaseLogger implements Logger {
  constructor(
    protected readonly sink: Sink,
    protected readonly level: LogLevel,
    protected readonly module: string,
  ) {}

  protected abstract emit(level: LogLevel, message: string, fields?: Fields): void;
  abstract child(module: string): Logger;

  private log(level: LogLevel, message: string, fields?: Fields): void {
    if (rank(level) >= rank(this.level)) this.emit(level, message, fields);
  }
  trace(m: string, f?: Fields): void { this.log('trace', m, f); }
  debug(m: string, f?: Fields): void { this.log('debug', m, f); }
  info(m: string, f?: Fields): void { this.log('info', m, f); }
  warn(m: string, f?: Fields): void { this.log('warn', m, f); }
  error(m: string, f?: Fields): void { this.log('error', m, f); }

  progress(label: string): Progress {
    const started = Date.now();
    this.info(`${label}...`);
    let lastPct = -1;
    return {
      update: (done, total) => {
        if (total === undefined || total <= 0) return;
        const pct = Math.floor((done / total) * 100);
        // Report every 10 % so non-terminal logs stay short.
        if (pct >= lastPct + 10 || (pct === 100 && lastPct !== 100)) {
          lastPct = pct;
          this.debug(`${label}: ${pct}%`, { done, total });
        }
      },
      done: (message) => this.info(message ?? `${label}: done`, { durationMs: Date.now() - started }),
    };
  }
}

/** Human output on stderr: `LEVEL [module] message key=value`. */
export class TerminalLogger extends BaseLogger {
  constructor(sink: Sink = process.stderr, level: LogLevel = 'info', module = 'firebuild') {
    super(sink, level, module);
  }
  child(module: string): Logger {
    return new TerminalLogger(this.sink, this.level, module);
  }
  protected emit(level: LogLevel, message: string, fields?: Fields): void {
    const tail = fields && Object.keys(fields).length > 0
      ? ' ' + Object.entries(fields).map(([k, v]) => `${k}=${formatValue(v)}`).join(' ')
      : '';
    const prefix = level === 'info' ? '' : `${level.toUpperCase()} `;
    this.sink.write(`${prefix}[${this.module}] ${message}${tail}\n`);
  }

  override progress(label: string): Progress {
    if (!this.sink.isTTY || rank(this.level) > rank('info')) return super.progress(label);
    // On a terminal: one line rewritten in place.
    const started = Date.now();
    this.sink.write(`[${this.module}] ${label}...`);
    return {
      update: (done, total) => {
        const pct = total ? ` ${Math.floor((done / total) * 100)}%` : ` ${done}`;
        this.sink.write(`\r\x1b[K[${this.module}] ${label}...${pct}`);
      },
      done: (message) => {
        this.sink.write(`\r\x1b[K[${this.module}] ${message ?? `${label}: done`} (${Date.now() - started} ms)\n`);
      },
    };
  }
}

/** One JSON object a line: `@level`, `@message`, `@module`, `@timestamp`, plus the fields. */
export class JsonLogger extends BaseLogger {
  constructor(sink: Sink = process.stderr, level: LogLevel = 'info', module = 'firebuild') {
    super(sink, level, module);
  }
  child(module: string): Logger {
    return new JsonLogger(this.sink, this.level, module);
  }
  protected emit(level: LogLevel, message: string, fields?: Fields): void {
    const obj: Fields = { '@level': level, '@message': message, '@module': this.module, '@timestamp': new Date().toISOString() };
    for (const [k, v] of Object.entries(fields ?? {})) if (!(k in obj)) obj[k] = v;
    this.sink.write(JSON.stringify(obj, jsonSafe) + '\n');
  }
}

/** Collects entries in memory; for tests and for capturing a step's log. */
export class MemoryLogger implements Logger {
  readonly entries: { level: LogLevel; module: string; message: string; fields?: Fields }[];
  constructor(private readonly module = 'firebuild', entries?: MemoryLogger['entries']) {
    this.entries = entries ?? [];
  }
  private push(level: LogLevel, message: string, fields?: Fields): void {
    this.entries.push(fields ? { level, module: this.module, message, fields } : { level, module: this.module, message });
  }
  trace(m: string, f?: Fields): void { this.push('trace', m, f); }
  debug(m: string, f?: Fields): void { this.push('debug', m, f); }
  info(m: string, f?: Fields): void { this.push('info', m, f); }
  warn(m: string, f?: Fields): void { this.push('warn', m, f); }
  error(m: string, f?: Fields): void { this.push('error', m, f); }
  child(module: string): Logger { return new MemoryLogger(module, this.entries); }
  progress(label: string): Progress {
    this.info(`${label}...`);
    return { update: () => undefined, done: (m) => this.info(m ?? `${label}: done`) };
  }
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /\s/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v, jsonSafe);
}

function jsonSafe(_k: string, v: unknown): unknown {
  if (v instanceof Error) return v.message;
  if (typeof v === 'bigint') return v.toString();
  return v;
}
