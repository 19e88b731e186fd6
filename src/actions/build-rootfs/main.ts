import { runAction } from '../common.js';
import { getInputs, run } from './impl.js';

// Every VM and temp dir the build owns is recorded as it starts: the post step removes what a killed step left.
await runAction(() => run('rootfs', getInputs()), { recordOwned: true });
