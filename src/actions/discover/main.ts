import { runAction } from '../common.js';
import { run } from './impl.js';

await runAction(() => run());
