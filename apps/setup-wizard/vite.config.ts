/// <reference types="vitest/config" />
import { defineConfig } from 'vite';

// The wizard is embedded into the b3iqd binary and served at /setup/.
// The build must be reproducible (content-hashed names only, no timestamps):
// CI rebuilds it and fails when the result differs from the committed dist/.
const DEV_NODE = process.env.B3IQ_DEV_NODE ?? 'http://127.0.0.1:7420';

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
  // `npm run dev` serves the UI with hot reload and forwards the API to a running `b3iqd serve`
  // (B3IQ_DEV_NODE, default http://127.0.0.1:7420). The proxy presents the node's own origin so
  // the node's Host allowlist and same-origin (CSRF) checks pass; development only.
  server: {
    proxy: Object.fromEntries(
      ['/api', '/v1', '/healthz', '/metrics'].map((p) => [p, {
        target: DEV_NODE,
        changeOrigin: true,
        configure: (proxy: { on: (ev: 'proxyReq', cb: (req: { setHeader: (k: string, v: string) => void; removeHeader: (k: string) => void }) => void) => void }) => {
          proxy.on('proxyReq', (req) => {
            req.setHeader('Origin', DEV_NODE);
            req.removeHeader('Sec-Fetch-Site');
          });
        },
      }]),
    ),
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
    restoreMocks: true,
    setupFiles: ['src/test/setup.ts'],
  },
});
