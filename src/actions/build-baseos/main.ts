import { runAction } from '../common.js';
import { run } from '../build-rootfs/impl.js';
import { getInputs } from './impl.js';

await runAction(() => run('baseos', getInputs()));
