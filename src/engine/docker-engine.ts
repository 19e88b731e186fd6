import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { configKey, dockerConfigCredentials } from '../oci/docker-config.js';
import { DOCKER_HUB } from '../oci/reference.js';
import { own } from '../util/cleanup.js';
import { UserError, InternalError } from '../util/errors.js';
import { buildxAvailable } from './buildx.js';
import type { Logger } from '../util/logger.js';
import { dockerClient, dockerVersion } from './docker-client.js';

/** The Docker engine through dockerode: build, pull, inspect, export, import. */
export interface BuildFailure {
  step?: number;
  /** The failing step as the builder printed it, e.g. `RUN false`. */
  instruction?: string;
  exitCode?: number;
  tail: string[];
  message: string;
}

export class DockerBuildError extends Error {
  constructor(readonly failure: BuildFailure) {
    super(failure.message);
  }
}

export class DockerEngine {
  private buildxMemo?: Promise<boolean>;

  constructor(
    private readonly log: Logger,
    readonly docker: Docker = dockerClient(),
  ) {}

  /** Fails with a UserError saying how to start the engine when it does not answer. */
  async ensureReachable(): Promise<string> {
    return (await dockerVersion(this.docker)).version;
  }

  /** Whether `docker buildx` is there (BuildKit builds with --output type=tar). Memoised. */
  hasBuildx(): Promise<boolean> {
    this.buildxMemo ??= buildxAvailable();
    return this.buildxMemo;
  }

  async imageInspect(ref: string): Promise<Docker.ImageInspectInfo | undefined> {
    try {
      return await this.docker.getImage(ref).inspect();
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw new InternalError(`cannot inspect image ${ref}`, { cause: err });
    }
  }

  /** Pull with the user's Docker credentials (the Docker config: auths, credsStore, credHelpers). */
  async pull(ref: string): Promise<void> {
    const auth = await registryAuth(ref);
    this.log.info('pulling image', { ref });
    let stream: NodeJS.ReadableStream;
    try {
      stream = (await this.docker.pull(ref, auth ? { authconfig: auth } : {})) as NodeJS.ReadableStream;
    } catch (err) {
      throw new UserError(`image ${ref} not found in the engine and cannot be pulled (${messageOf(err)}): check the name, or docker login to its registry`, { cause: err });
    }
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(stream, (err: Error | null) => {
        if (err) reject(new UserError(`pulling ${ref} failed (${err.message}): check the name, or docker login to its registry`, { cause: err }));
        else resolve();
      });
    });
  }

  /** The image, pulled when the engine does not have it. */
  async ensureImage(ref: string): Promise<Docker.ImageInspectInfo> {
    const have = await this.imageInspect(ref);
    if (have) return have;
    await this.pull(ref);
    const got = await this.imageInspect(ref);
    if (!got) throw new UserError(`image ${ref} not found after pulling it: check the name`);
    return got;
  }

  /**
   * Build with the classic builder through the Engine API. Streams the builder's output to the log at
   * debug; a failure carries the step, the instruction, its exit code and the output's tail.
   */
  async build(context: Readable, o: { dockerfile: string; buildArgs: Record<string, string>; target?: string; labels: Record<string, string>; tag: string; noCache?: boolean; pull?: boolean }): Promise<string> {
    const stream = (await this.docker.buildImage(context as unknown as NodeJS.ReadableStream, {
      dockerfile: o.dockerfile,
      t: o.tag,
      buildargs: o.buildArgs,
      labels: o.labels,
      ...(o.target ? { target: o.target } : {}),
      ...(o.noCache ? { nocache: true } : {}),
      ...(o.pull ? { pull: true } : {}),
      rm: true,
      forcerm: true,
    } as Docker.ImageBuildOptions)) as NodeJS.ReadableStream;
    const tail: string[] = [];
    let id: string | undefined;
    let step: number | undefined;
    let instruction: string | undefined;
    let buildError: string | undefined;
    return new Promise<string>((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (streamErr: Error | null) => {
          // The engine reports a failed step as an {error} event in the stream, not as a stream error.
          const err = streamErr ?? (buildError !== undefined ? new Error(buildError) : null);
          if (err) {
            const msg = err.message;
            const code = /returned a non-zero code: (\d+)/.exec(msg);
            const failure: BuildFailure = { tail: tail.slice(-20), message: msg.trim() };
            if (step !== undefined) failure.step = step;
            if (instruction !== undefined) failure.instruction = instruction;
            if (code) failure.exitCode = Number(code[1]);
            reject(new DockerBuildError(failure));
          } else if (!id) reject(new InternalError('the Docker build finished without an image id'));
          else resolve(id);
        },
        (ev: { stream?: string; aux?: { ID?: string }; error?: string; errorDetail?: { message?: string } }) => {
          if (ev.error !== undefined) buildError = ev.errorDetail?.message ?? ev.error;
          if (ev.aux?.ID) id = ev.aux.ID;
          if (!ev.stream) return;
          for (const raw of ev.stream.split('\n')) {
            // eslint-disable-next-line no-control-regex -- the builder colours stderr lines
            const line = raw.replace(/\x1b\[[0-9;]*m/g, '');
            if (line.trim() === '') continue;
            const m = /^Step (\d+)\/\d+ : (.*)$/.exec(line);
            if (m) {
              step = Number(m[1]);
              instruction = m[2];
              tail.length = 0; // the tail is the failing step's own output
              this.log.info(line);
            } else if (/^ ---> |^Removing intermediate container /.test(line)) {
              this.log.debug(line);
            } else {
              this.log.debug(line);
              tail.push(line);
              if (tail.length > 200) tail.shift();
            }
            const built = /^Successfully built ([0-9a-f]+)/.exec(line);
            if (built && !id) id = built[1];
          }
        },
      );
    });
  }

  /** The image's file system as a tar stream (`docker export` of a container never started). */
  async exportImage(ref: string): Promise<{ stream: Readable; done: () => Promise<void> }> {
    const container = await this.docker.createContainer({ Image: ref, Cmd: ['/.firebuild-export'], Entrypoint: [], Labels: { 'org.firebuild.export': 'true' } });
    const drop = (): Promise<void> => container.remove({ force: true, v: true }).catch(() => undefined);
    // Owned until removed: a cancel (SIGINT/SIGTERM) mid-export removes it too.
    const release = own(`the export container ${container.id.slice(0, 12)}`, drop);
    const remove = async (): Promise<void> => {
      await drop();
      release();
    };
    try {
      const stream = (await container.export()) as unknown as Readable;
      stream.on('close', () => void remove());
      return { stream, done: remove };
    } catch (err) {
      await remove();
      throw new InternalError(`cannot export ${ref}`, { cause: err });
    }
  }

  /** Import a root file system tar as an image named `ref` (with labels). */
  async importTar(tar: Readable, ref: string, changes: string[] = []): Promise<void> {
    const [repo, tag] = splitRef(ref);
    const stream = (await this.docker.importImage(tar as unknown as string, { repo, tag, changes } as unknown as object)) as unknown as NodeJS.ReadableStream;
    await new Promise<void>((resolve, reject) => this.docker.modem.followProgress(stream, (err: Error | null) => (err ? reject(new InternalError(`importing ${ref} failed`, { cause: err })) : resolve())));
  }
}

export function splitRef(ref: string): [string, string] {
  const at = ref.indexOf('@');
  if (at >= 0) return [ref.slice(0, at), ref.slice(at + 1)];
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  return colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
}

/**
 * Credentials for the ref's registry from the Docker config, as the engine API wants them: found as the
 * Docker CLI finds them (auths, credsStore, credHelpers, DOCKER_AUTH_CONFIG: oci/docker-config.ts).
 */
export async function registryAuth(ref: string, env: NodeJS.ProcessEnv = process.env): Promise<{ username?: string; password?: string; identitytoken?: string; serveraddress: string } | undefined> {
  const first = ref.split('/')[0] ?? '';
  const registry = ref.includes('/') && /[.:]|^localhost$/.test(first) ? first : DOCKER_HUB;
  const c = await dockerConfigCredentials(registry, env);
  if (!c) return undefined;
  return { ...(c.username ? { username: c.username, password: c.password } : {}), ...(c.identityToken ? { identitytoken: c.identityToken } : {}), serveraddress: configKey(registry) };
}

function messageOf(err: unknown): string {
  const e = err as { json?: { message?: string }; message?: string };
  return (e.json?.message ?? e.message ?? String(err)).trim().split('\n')[0] ?? 'error';
}
