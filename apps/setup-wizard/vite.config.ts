/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// The wizard is embedded into the b3iqd binary and served at /setup/.
// The build must be reproducible (content-hashed names only, no timestamps):
// CI rebuilds it and fails when the result differs from the committed dist/.
export default defineConfig({
  base: '/setup/',
  oxc: { jsx: { runtime: 'automatic' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    // Strict CSP: no inline scripts, so nothing may be inlined as a data: URL either.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
    target: 'es2022',
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
    restoreMocks: true,
    setupFiles: ['src/test/setup.ts'],
  },
});
