// Lint: a small typed rule set (typescript-eslint, with type information from tsconfig.json through the project
// service). `npm run lint`. Generated protocol code and the dashboard's browser script are not linted.
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

const unusedVars = ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }];

export default defineConfig(
  {
    ignores: ['**/node_modules/', '**/dist/', 'packages/proto/src/gen/', 'apps/api/dashboard/', 'coverage/', 'test-artifacts/', 'bench/results/', 'scratch/'],
  },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: {
        // Root config files (vitest.config.ts) sit outside tsconfig.json's include.
        projectService: { allowDefaultProject: ['*.config.ts'] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': unusedVars,
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
    },
  },
  {
    // Scripts and launchers in plain JavaScript: no type information, so only the untyped rule.
    files: ['**/*.{js,mjs}'],
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: { '@typescript-eslint/no-unused-vars': unusedVars },
  },
);
