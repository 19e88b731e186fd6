/**
 * argv that starts `cmd` inside the cgroup: a shell puts itself in the cgroup, then execs the command,
 * so the command and all it forks are in it from their first instruction. (The runtime makes and reaps
 * the cgroup, runtime/cgroup.ts; the backends only start their VMM in it.)
 */
export function inCgroupArgv(cgroup: string | undefined, cmd: string, args: string[]): [string, string[]] {
  if (!cgroup) return [cmd, args];
  return ['/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, cmd, ...args]];
}
