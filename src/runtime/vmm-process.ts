import * as fs from 'node:fs';
import { errnoCode } from '../util/errors.js';

/**
 * A VM's process identity. A bare pid names whatever process holds that number now: after the VMM dies
 * the kernel hands the number to the next process, and `ls`, `purge` and `kill` would mistake it for the
 * VM. So the state records the pid with the process's start time (field 22 of /proc/<pid>/stat, clock
 * ticks since boot) and the host's boot id (/proc/sys/kernel/random/boot_id); a process is the VM's only
 * when all three match. Every liveness check and every signal the runtime sends goes through here.
 *
 * State written before start times were recorded (`startTime` absent): the process counts as the VM only
 * when its command line names the VM's id (QEMU's holds the run cache path, Firecracker's `--id`), so an
 * unrelated process that reused the pid is never taken for it.
 *
 * What is left: between the check and kill(2) the process could exit and its pid be reused; that window
 * is microseconds (Node has no pidfd_open), and where the VM has a cgroup the runtime kills through
 * `cgroup.kill` first, which cannot reach a process outside it.
 */
export interface VmmIdentity {
  pid: number;
  /** /proc/<pid>/stat field 22 as text (it may exceed 2^53 in theory); 'exited' when the VMM was gone before it could be read. */
  startTime?: string | undefined;
  bootId?: string | undefined;
  /** The VM's id, for states without a start time (the command-line check). */
  id?: string | undefined;
}

const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

export function bootId(): string {
  return fs.readFileSync(BOOT_ID_FILE, 'utf8').trim();
}

/**
 * Field 22 of /proc/<pid>/stat (start time), or undefined when there is no such process or it has
 * exited and not been reaped (a zombie: state Z or X). Hosts whose PID 1 reaps no orphans keep a killed
 * VMM as a zombie for good; it runs nothing, so it is not the VM.
 */
export function procStartTime(pid: number): string | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) is in parentheses and may hold spaces or ')': the fields after the last ')' start at field 3.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
  return rest[22 - 3];
}

/** The identity of a process that exists now (called right after the VMM starts). */
export function identify(pid: number): { pid: number; startTime: string; bootId: string } {
  return { pid, startTime: procStartTime(pid) ?? 'exited', bootId: bootId() };
}

function cmdline(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return [];
  }
}

/** True when the process with this identity is still running (a zombie is not). */
export function vmmAlive(v: VmmIdentity): boolean {
  if (!v.pid) return false;
  const start = procStartTime(v.pid);
  if (start === undefined) return false;
  if (v.startTime !== undefined) {
    if (v.bootId !== undefined && v.bootId !== bootId()) return false;
    return start === v.startTime;
  }
  // Legacy state: only a process whose command line names the VM's id.
  return !!v.id && cmdline(v.pid).some((a) => a.includes(v.id!));
}

/** Send a signal to the VMM if, and only if, it is still the recorded process; false when it was not signalled. */
export function signalVmm(v: VmmIdentity, signal: NodeJS.Signals, o: { group?: boolean } = {}): boolean {
  if (!vmmAlive(v)) return false;
  try {
    // An isolated QEMU VM is a process group led by the VMM's wrapper (QEMU, slirp4netns): all of it.
    if (o.group) {
      try {
        process.kill(-v.pid, signal);
        return true;
      } catch {
        // no such group: the leader alone
      }
    }
    process.kill(v.pid, signal);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'ESRCH') return false;
    throw err;
  }
}

/** Wait until the VMM is gone; false when it is still there after `ms`. */
export async function waitVmmGone(v: VmmIdentity, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (vmmAlive(v)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}
