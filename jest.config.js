// Unit tests: pure logic, fast. Integration tests (*.itg.test.ts): real Docker, registry, QEMU, e2fsprogs, git.
const common = {
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'es6' } }],
  },
  testEnvironment: 'node',
};

export default {
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/test/integration/**/*.itg.test.ts'],
      globalSetup: '<rootDir>/test/helpers/global-setup.ts',
      slowTestThreshold: 60,
    },
  ],
  testTimeout: 600000,
};
