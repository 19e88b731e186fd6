import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['lib/**', 'dist/**', 'node_modules/**', 'coverage/**', 'test/fixtures/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', URL: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-imports': ['error', { patterns: [{ group: ['@actions/*'], message: 'The core never imports @actions/*: only src/actions/ may.' }] }],
    },
  },
  // Outbound requests honour HTTP(S)_PROXY/NO_PROXY only through util/fetch.ts's netFetch.
  { files: ['src/**/*.ts'], ignores: ['src/util/fetch.ts'], rules: { 'no-restricted-globals': ['error', { name: 'fetch', message: 'use netFetch (src/util/fetch.ts): it honours HTTP_PROXY/HTTPS_PROXY/NO_PROXY' }] } },
  // The faces and the tests may use @actions/* (tests validate workflows with GitHub's parser).
  { files: ['src/actions/**/*.ts', 'test/**/*.ts'], rules: { 'no-restricted-imports': 'off' } },
);
