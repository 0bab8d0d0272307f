// `npm run build`'s second step (after the type check): bundles src/main.ts and everything it imports,
// dependencies included, into dist/ with esbuild — dist/main.js plus one chunk per lazily imported part
// (app-kube.ts and @kubernetes/client-node only when a Kubernetes source is configured). A start then
// reads a few files instead of ~1,000 modules, and of client-node only what KubeConfig needs: its
// generated API models are marked free of side effects, so those no code uses are left out.
// Node 20 has no compile cache for ES modules; this is what makes start-up fast there.
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist`;

/** client-node's generated code (APIs, models) has no side effects: unused modules are dropped. */
const generatedCodeIsPure = {
  name: 'client-node-generated-code-is-pure',
  setup(b) {
    b.onResolve({ filter: /.*/ }, async (args) => {
      if (args.pluginData?.resolving || !args.importer.includes('/@kubernetes/client-node/'))
        return undefined;
      const resolved = await b.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: { resolving: true },
      });
      if (resolved.errors.length > 0) return resolved;
      return resolved.path.includes('/@kubernetes/client-node/dist/gen/')
        ? { ...resolved, sideEffects: false }
        : resolved;
    });
  },
};

/**
 * node-fetch is left out of the build, with whatwg-url and tr46's Unicode tables (~400 KB, the largest part
 * of the Kubernetes chunk, parsed at every start). client-node imports it in two places, neither of which
 * opa-sync runs: config.js takes `Headers` for applyToFetchOptions (Node 20 has the same class built in),
 * and its generated API clients (makeApiClient) send requests with it — opa-sync talks to the API server
 * through its own client (src/kube/raw-client.ts, list-watch.ts) with KubeConfig's HTTPS options.
 */
const withoutNodeFetch = {
  name: 'client-node-without-node-fetch',
  setup(b) {
    b.onResolve({ filter: /^node-fetch$/ }, (args) =>
      args.importer.includes('/@kubernetes/client-node/dist/')
        ? { path: 'node-fetch', namespace: 'opa-sync-shim' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'opa-sync-shim' }, () => ({
      contents: [
        'export const Headers = globalThis.Headers;',
        'export default function fetch() {',
        "  throw new Error('client-node API clients are not part of opa-sync\\'s build (node-fetch left out)');",
        '}',
      ].join('\n'),
      loader: 'js',
    }));
  },
};

rmSync(outdir, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  // The opa runner's helper process is started by file name (src/bundles/opa-runner.ts looks for
  // ./opa-runner-child.js beside its own module, which is in dist/ itself): it is an entry of its own.
  entryPoints: ['src/main.ts', { in: 'src/bundles/opa-runner-child.ts', out: 'opa-runner-child' }],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  // Every file in dist/ itself: a module's paths relative to its own (../package.json) stay as in src/.
  chunkNames: '[name]-[hash]',
  // The CommonJS dependencies (express, prom-client, …) call require() for Node's own modules.
  banner: {
    js: "import { createRequire as __opaSyncRequire } from 'node:module'; const require = __opaSyncRequire(import.meta.url);",
  },
  plugins: [generatedCodeIsPure, withoutNodeFetch],
  logLevel: 'warning',
});
