// Lint rules for opa-sync: type-aware, so that promises are awaited and never passed where a
// callback's return value is ignored.
import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/',
      'node_modules/',
      'bundles/',
      'tools/',
      'test/harness/summary-reporter.cjs',
      // Module hooks and build/bench scripts run by node itself, outside the TypeScript project.
      'test/fixtures/hooks/',
      'scripts/bundle.mjs',
      'scripts/bench/perf-eld.mjs',
      'eslint.config.mjs',
    ],
  },
  eslint.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      'no-shadow': 'off',
      '@typescript-eslint/no-shadow': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // chai's `expect(x).to.be.true` style reads as an unused expression.
      '@typescript-eslint/no-unused-expressions': 'off',
    },
  },
);
