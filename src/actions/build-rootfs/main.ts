import { runAction } from '../common.js';
import { getInputs, run } from './impl.js';

await runAction(() => run('rootfs', getInputs()));
