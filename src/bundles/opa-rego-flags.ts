// The flags that make an opa binary parse the Rego version opa-sync means. OPA 0.x reads Rego v0 unless
// told `--v1-compatible`; OPA 1.x reads Rego v1 unless told `--v0-compatible` (and the `opa inspect` of
// 0.x has no `--v0-compatible`). Without a version asked for, the binary's own default applies, as it
// would in an OPA of the same version that has no flag: so `--opa-bin` of the fleet's OPA version
// validates what that OPA will load. The binary's version is asked once (`opa version`).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
const majors = new Map<string, Promise<number>>();

/**
 * The major version of an opa binary (`Version: 0.70.0` → 0), asked once per path. 1 when its
 * answer has no version: the commands that follow then fail with opa's own error if it cannot run.
 *
 * @example
 * await opaMajorVersion('/usr/local/bin/opa'); // 1
 */
export function opaMajorVersion(opaBin: string): Promise<number> {
  let known = majors.get(opaBin);
  if (known === undefined) {
    known = run(opaBin, ['version'], { timeout: 10_000, encoding: 'utf8' }).then(
      ({ stdout }) => {
        const match = /^Version:\s*v?(\d+)\./m.exec(stdout);
        return match === null ? 1 : Number(match[1]);
      },
      () => {
        majors.delete(opaBin); // asked again next time: the binary may be there then
        return 1;
      },
    );
    majors.set(opaBin, known);
  }
  return known;
}

/**
 * Flags for `opa check`, `opa inspect` and `opa eval` of a binary of major version `major` to parse
 * Rego v0 (`v0` true), Rego v1 (false), or its own default (undefined: no flag).
 *
 * @example
 * regoVersionFlags(0, false); // ['--v1-compatible']
 * regoVersionFlags(1, true); // ['--v0-compatible']
 */
export function regoVersionFlags(major: number, v0: boolean | undefined): string[] {
  if (v0 === undefined) return [];
  if (major === 0) return v0 ? [] : ['--v1-compatible'];
  return v0 ? ['--v0-compatible'] : [];
}

/** Whether a binary parses Rego v0 when asked for `v0` (undefined: its default). */
export function parsesV0(major: number, v0: boolean | undefined): boolean {
  return v0 ?? major === 0;
}
