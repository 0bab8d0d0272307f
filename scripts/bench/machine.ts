// The machine line of the report: cores, memory, kernel, Node, OPA and Kubernetes versions, the
// opa-sync commit measured, the load when the run began (the machine is shared), and the date.
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { requireTool } from '../tools.js';
import { REPO } from './env.js';

export interface Machine {
  cores: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  node: string;
  opa: string;
  kubernetes: string;
  opaSyncCommit: string;
  /** Load average (1 min) when the measurement began: other engineers use the same 2 cores. */
  loadAverage: number;
  date: string;
}

function run(binary: string, args: string[], cwd?: string): string {
  try {
    return execFileSync(binary, args, { encoding: 'utf8', ...(cwd ? { cwd } : {}) }).trim();
  } catch {
    return 'unknown';
  }
}

export function machine(): Machine {
  const opaVersion = /Version:\s*(\S+)/.exec(run(requireTool('opa'), ['version']))?.[1] ?? 'unknown';
  const kube = /v\d+\.\d+\.\d+\S*/.exec(run(requireTool('kube-apiserver'), ['--version']))?.[0] ?? 'unknown';
  // The commit that last changed what is measured (the bench's own commits do not change opa-sync).
  const commit = run('git', ['log', '-1', '--format=%h', '--abbrev=12', '--', 'src'], REPO);
  const dirty = run('git', ['status', '--porcelain', '--', 'src'], REPO) !== '' ? ' (src modified)' : '';
  return {
    cores: os.cpus().length,
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    opa: opaVersion.startsWith('v') ? opaVersion : `v${opaVersion}`,
    kubernetes: kube,
    opaSyncCommit: commit + dirty,
    loadAverage: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
  };
}

export function machineLine(m: Machine): string {
  return (
    `${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}, OPA ${m.opa}, ` +
    `Kubernetes ${m.kubernetes}, opa-sync ${m.opaSyncCommit}, load average ${m.loadAverage} at start, ${m.date}`
  );
}
