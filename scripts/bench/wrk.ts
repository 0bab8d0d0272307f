// wrk (Debian's package, installed when missing): keep-alive HTTP load from one thread, its --latency
// output parsed, and the server's CPU per request from /proc over the same time.
import { spawn } from 'node:child_process';
import { ensureDebianBinary } from './packages.js';
import { cpuSeconds } from './proc.js';
import type { Target } from './serving.js';

export interface WrkResult {
  rps: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  non2xx3xx: number;
  /** wrk's "Socket errors: …" line, or ''. */
  errors: string;
}

function latencyMs(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text.trim());
  if (m === null) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

/** The figures of wrk's output (with --latency). Pure, so that it is unit-tested. */
export function parseWrk(out: string): WrkResult {
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN),
    p50Ms: latencyMs(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? ''),
    p99Ms: latencyMs(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? ''),
    non2xx3xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0),
    errors: /Socket errors:.*$/m.exec(out)?.[0] ?? '',
  };
}

export function ensureWrk(log: (line: string) => void): string {
  return ensureDebianBinary('/usr/bin/wrk', 'wrk', log);
}

/** Runs wrk (1 thread) against `url`. */
export async function wrk(
  bin: string,
  options: { url: string; connections: number; seconds: number; headers?: Record<string, string> },
): Promise<WrkResult> {
  const args = ['-t1', `-c${options.connections}`, `-d${options.seconds}s`, '--latency'];
  for (const [k, v] of Object.entries(options.headers ?? {})) args.push('-H', `${k}: ${v}`);
  args.push(options.url);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (code !== 0) throw new Error(`wrk failed (${code}):\n${out}`);
  return parseWrk(out);
}

/** wrk against a target, with the target's CPU per request (µs) from /proc; fails on any bad answer. */
export async function load(
  bin: string,
  target: Target,
  options: { connections: number; seconds: number; headers?: Record<string, string> },
): Promise<WrkResult & { cpuUs: number }> {
  const before = cpuSeconds(target.pid) ?? NaN;
  const result = await wrk(bin, { url: target.url, ...options });
  const cpu = (cpuSeconds(target.pid) ?? NaN) - before;
  if (result.non2xx3xx > 0 || result.errors !== '')
    throw new Error(`${target.name}: ${result.non2xx3xx} bad answers ${result.errors}`);
  return { ...result, cpuUs: (cpu * 1e6) / result.requests };
}
