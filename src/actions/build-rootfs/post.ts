import { removeLeftOwned } from '../common.js';

// What the main step still owned when it ended (nothing after a normal end; its VMs and work dirs after a SIGKILL).
await removeLeftOwned('build-rootfs');
