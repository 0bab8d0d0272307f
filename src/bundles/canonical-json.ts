// OPA's canonical JSON, the form OPA hashes structured bundle files in (v1/bundle/hash.go `walk`, OPA
// v1.22.3): objects with keys sorted by their UTF-8 bytes (Go's string order), no whitespace, strings as
// Go's encoding/json writes them with HTML escaping off, numbers as their literal text (OPA decodes with
// UseNumber). The builder writes data.json and .manifest in this form, so their bytes are what OPA
// hashes and the signer can digest them as they are.
import { InvalidInputError } from '../util/errors.js';
import { MAX_JSON_DEPTH } from '../util/json-depth.js';
import { compareUtf8 } from '../util/utf8.js';

/** A value for a structured bundle file (data.json, .manifest) that JSON cannot hold (NaN, a cycle…). */
export class InvalidJsonError extends InvalidInputError {
  constructor(message: string, cause?: unknown) {
    super('invalid_json', message, cause === undefined ? {} : { cause });
  }
}

// The sources refuse data nested deeper than this (util/json-depth.ts); this check stays for other callers.
const MAX_DEPTH = MAX_JSON_DEPTH;

// Go decodes a lone surrogate (raw or \u-escaped) as U+FFFD; doing the same before sorting and encoding
// keeps key order and bytes identical to what OPA computes.
function wellFormed(s: string): string {
  return s.replace(/\p{Surrogate}/gu, '\uFFFD');
}

// What JSON.stringify writes differently from Go for a string: lone surrogates (it escapes them, Go
// reads them as U+FFFD) and U+2028/U+2029 (Go escapes them). Everything else it writes as Go does:
// `"` and `\\` escaped, \b \t \n \f \r short, other controls as lowercase \u00xx, the rest as is.
const NOT_AS_STRINGIFY = /[\u2028\u2029\uD800-\uDFFF]/;
const SURROGATE = /[\uD800-\uDFFF]/;

/** A JSON string literal exactly as Go's encoding/json writes it with SetEscapeHTML(false). */
export function goJsonString(value: string): string {
  return NOT_AS_STRINGIFY.test(value) ? goJsonStringSlow(value) : JSON.stringify(value);
}

/** `goJsonString` character by character: the reference, and the way for strings JSON.stringify gets wrong. */
export function goJsonStringSlow(value: string): string {
  let out = '"';
  for (const ch of wellFormed(value)) {
    const code = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (code < 0x20) {
      // Go ≥ 1.22 uses the short escapes for \b and \f too; other controls as lowercase \u00xx.
      const short: Record<number, string> = { 8: '\\b', 9: '\\t', 10: '\\n', 12: '\\f', 13: '\\r' };
      out += short[code] ?? `\\u00${code.toString(16).padStart(2, '0')}`;
    } else if (code === 0x2028 || code === 0x2029) out += `\\u${code.toString(16)}`;
    else out += ch;
  }
  return `${out}"`;
}

/** Where in the value an encoder is: array indexes and object keys from the top. */
type Trail = (string | number)[];

function describe(trail: Trail): string {
  return `$${trail.map((t) => (typeof t === 'number' ? `[${t}]` : `.${JSON.stringify(t)}`)).join('')}`;
}

/**
 * The canonical JSON text of a JavaScript value, the form OPA hashes: what `buildBundle` writes into
 * data.json and .manifest so that a file's bytes and its signature digest agree. Numbers are written as
 * `JSON.stringify` writes them; NaN, Infinity, functions, symbols, Maps, Sets, cycles and `undefined`
 * (except as an object member, which is left out as JSON.stringify does) are refused.
 */
export function canonicalJson(value: unknown, what = 'value'): string {
  const ancestors = new Set<object>();
  // The path is kept as a trail and written out only for an error message.
  const trail: Trail = [];
  const encode = (v: unknown, depth: number): string => {
    if (depth > MAX_DEPTH)
      throw new InvalidJsonError(`${what} is nested deeper than ${MAX_DEPTH} levels (at ${describe(trail)})`);
    if (v === null) return 'null';
    switch (typeof v) {
      case 'boolean':
        return v ? 'true' : 'false';
      case 'number':
        if (!Number.isFinite(v))
          throw new InvalidJsonError(
            `${what} holds ${String(v)} at ${describe(trail)}, which JSON cannot hold`,
          );
        return JSON.stringify(v);
      case 'bigint':
        return v.toString();
      case 'string':
        return goJsonString(v);
      case 'object':
        break;
      default:
        throw new InvalidJsonError(
          `${what} holds a ${typeof v} at ${describe(trail)}, which JSON cannot hold`,
        );
    }
    if (ancestors.has(v)) throw new InvalidJsonError(`${what} holds a cycle at ${describe(trail)}`);
    if (v instanceof Map || v instanceof Set) {
      throw new InvalidJsonError(
        `${what} holds a ${v.constructor.name} at ${describe(trail)}; use a plain object or array`,
      );
    }
    const withToJson = v as { toJSON?: unknown };
    if (typeof withToJson.toJSON === 'function') {
      return encode((withToJson.toJSON as () => unknown).call(v), depth + 1);
    }
    ancestors.add(v);
    try {
      if (Array.isArray(v)) {
        const items: string[] = [];
        for (let i = 0; i < v.length; i += 1) {
          const e: unknown = v[i];
          trail.push(i);
          if (e === undefined) throw new InvalidJsonError(`${what} holds undefined at ${describe(trail)}`);
          items.push(encode(e, depth + 1));
          trail.pop();
        }
        return `[${items.join(',')}]`;
      }
      const members: [string, string][] = [];
      // Keys of an object differ, unless two become the same as lone surrogates turn into U+FFFD:
      // looked for (before the member is encoded, as ever) once a key has changed so.
      let seen: Set<string> | undefined;
      for (const [k, member] of Object.entries(v)) {
        if (member === undefined) continue;
        const key = SURROGATE.test(k) ? wellFormed(k) : k;
        if (key !== k) seen ??= new Set(members.map(([m]) => m));
        if (seen !== undefined) {
          if (seen.has(key)) {
            throw new InvalidJsonError(
              `${what} has two keys at ${describe(trail)} that are the same once lone surrogates become U+FFFD`,
            );
          }
          seen.add(key);
        }
        trail.push(k);
        members.push([key, encode(member, depth + 1)]);
        trail.pop();
      }
      members.sort(([a], [b]) => compareUtf8(a, b));
      return `{${members.map(([k, m]) => `${goJsonString(k)}:${m}`).join(',')}}`;
    } finally {
      ancestors.delete(v);
    }
  };
  return encode(value, 0);
}
