import tailwindcss from "tailwindcss";
import { defineConfig } from "vite";

import tailwindConfig from "./tailwind.config";

// The built bundle is committed to ../read_api/ui and served by read_api/ui.py under /ui/.
// Asset names carry a content hash (served as immutable); the build is reproducible:
// building twice from the same lockfile gives byte-identical files.
export default defineConfig({
  base: "/ui/",
  css: {
    postcss: { plugins: [tailwindcss(tailwindConfig)] },
  },
  esbuild: {
    jsx: "automatic",
    legalComments: "none",
  },
  build: {
    outDir: "../read_api/ui",
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2020",
    sourcemap: false,
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
    rollupOptions: {
      output: {
        entryFileNames: "assets/[name]-[hash].js",
        chunkFileNames: "assets/[name]-[hash].js",
        assetFileNames: "assets/[name]-[hash][extname]",
      },
    },
  },
  server: {
    // `npm run dev`: the API runs on :8000 (kf serve); the dev server proxies /v1 to it.
    proxy: { "/v1": "http://127.0.0.1:8000" },
  },
});
