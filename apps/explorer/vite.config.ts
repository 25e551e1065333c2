/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// The explorer is embedded into the control plane (b3iq-control) and served at /explorer/.
// The build must be reproducible (content-hashed names only, no timestamps): CI rebuilds it and
// fails when the result differs from the committed dist/.
const DEV_CONTROL = process.env.B3IQ_DEV_CONTROL ?? 'https://127.0.0.1:7443';

export default defineConfig({
  base: '/explorer/',
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
  // `npm run dev` forwards the public API to a running control plane (B3IQ_DEV_CONTROL).
  server: {
    proxy: { '/v1/public': { target: DEV_CONTROL, changeOrigin: true, secure: false } },
  },
  test: {
    environment: 'node',
    include: ['src/**/*.test.ts'],
  },
});
