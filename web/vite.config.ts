// The console is served by lowart at /ui and calls the gateway on the same origin.
// `npm run dev` proxies the API paths to a running gateway: LOWART_URL (default
// http://127.0.0.1:3000).
import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

const target = process.env.LOWART_URL || 'http://127.0.0.1:3000';
const proxied = { target, changeOrigin: true };

export default defineConfig({
  base: '/ui/',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: false,
  },
  server: {
    proxy: {
      '/admin': proxied,
      '/v1': proxied,
      '/metrics': proxied,
      '/a2a': proxied,
    },
  },
  preview: {
    proxy: {
      '/admin': proxied,
      '/v1': proxied,
      '/metrics': proxied,
      '/a2a': proxied,
    },
  },
});
