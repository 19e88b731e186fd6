import { post } from './impl.js';

await post();
